//! Choosing the next token from the logits: the logits processors of Hugging Face
//! `generate` in its order (repetition penalty; OpenAI's presence and frequency penalties;
//! then, when sampling, temperature, top-k, top-p and min-p), and a seeded generator.
//!
//! The same seed gives the same tokens on every host: the draws come from amphi's own
//! generator (PCG-XSH-RR 64/32), the softmax uses only IEEE-754 basic operations (no libm,
//! whose last bits differ between platforms) and ties sort by token id.

use std::collections::HashMap;

/// How the next token is chosen (resolved from the request and `generation_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampling {
    /// `None`: greedy (the largest logit; the first on ties).
    pub sample: Option<Sample>,
    /// Hugging Face's: a seen token's logit is divided by it (multiplied when negative).
    pub repetition_penalty: f32,
    /// OpenAI's, over generated tokens: `logit −= presence·[count > 0] + frequency·count`.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub temperature: f32,
    /// 0: off.
    pub top_k: usize,
    /// 1: off.
    pub top_p: f32,
    /// 0: off.
    pub min_p: f32,
    pub seed: u64,
}

/// PCG-XSH-RR with 64-bit state and 32-bit output (O'Neill 2014).
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

const PCG_MULT: u64 = 6_364_136_223_846_793_005;
const PCG_INC: u64 = 1_442_695_040_888_963_407;

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut r = Self { state: 0 };
        r.next_u32();
        r.state = r.state.wrapping_add(seed);
        r.next_u32();
        r
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(PCG_MULT).wrapping_add(PCG_INC);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in [0, 1), 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// The chooser of one sequence: its settings, generator and token counts.
#[derive(Debug, Clone)]
pub(crate) struct Sampler {
    cfg: Sampling,
    rng: Rng,
    /// Tokens of the prompt and the output (the repetition penalty's set).
    seen: HashMap<u32, u32>,
    /// Tokens generated so far, counted (presence and frequency).
    generated: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(cfg: Sampling, prompt: &[u32]) -> Self {
        let mut seen = HashMap::new();
        for &t in prompt {
            *seen.entry(t).or_insert(0) += 1;
        }
        let seed = cfg.sample.as_ref().map_or(0, |s| s.seed);
        Self {
            cfg,
            rng: Rng::new(seed),
            seen,
            generated: HashMap::new(),
        }
    }

    /// Records a chosen token.
    pub fn push(&mut self, token: u32) {
        *self.seen.entry(token).or_insert(0) += 1;
        *self.generated.entry(token).or_insert(0) += 1;
    }

    /// Chooses the next token from one sequence's logits (modified in place).
    pub fn choose(&mut self, logits: &mut [f32]) -> u32 {
        let c = &self.cfg;
        if c.repetition_penalty != 1.0 {
            for &t in self.seen.keys() {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l < 0.0 {
                        *l * c.repetition_penalty
                    } else {
                        *l / c.repetition_penalty
                    };
                }
            }
        }
        if c.presence_penalty != 0.0 || c.frequency_penalty != 0.0 {
            for (&t, &n) in &self.generated {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= c.presence_penalty + c.frequency_penalty * n as f32;
                }
            }
        }
        match &self.cfg.sample {
            None => argmax(logits),
            Some(s) => {
                let s = s.clone();
                sample(logits, &s, &mut self.rng)
            }
        }
    }
}

/// The index of the largest value (the first of equal ones; NaN never wins).
pub(crate) fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Temperature, top-k, top-p and min-p (Hugging Face's warpers, in that order), then one draw.
fn sample(logits: &[f32], s: &Sample, rng: &mut Rng) -> u32 {
    let t = s.temperature.max(1e-6);
    // Candidates by logit, largest first; ties by id.
    let mut order: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| !logits[i as usize].is_nan())
        .collect();
    order.sort_unstable_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if s.top_k > 0 {
        order.truncate(s.top_k.max(1));
    }
    let top = logits[order[0] as usize] / t;
    let mut probs: Vec<f32> = order
        .iter()
        .map(|&i| crate::backend::cpu::exp(logits[i as usize] / t - top))
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if s.top_p < 1.0 {
        // The smallest prefix whose mass reaches top_p (at least one token).
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (n, &p) in probs.iter().enumerate() {
            mass += p;
            if mass >= s.top_p {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
    }
    if s.min_p > 0.0 {
        let floor = probs[0] * s.min_p;
        let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f32 = probs.iter().sum();
    let mut u = rng.next_f32() * total;
    for (&i, &p) in order.iter().zip(&probs) {
        if u < p {
            return i;
        }
        u -= p;
    }
    *order.last().unwrap_or(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(sample: Option<Sample>) -> Sampling {
        Sampling {
            sample,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }

    fn seeded(temperature: f32, top_k: usize, top_p: f32, min_p: f32, seed: u64) -> Sample {
        Sample {
            temperature,
            top_k,
            top_p,
            min_p,
            seed,
        }
    }

    /// PCG32's published first outputs for seed 42, stream 54 use another increment; here
    /// the generator is checked for determinism and spread instead.
    #[test]
    fn rng_is_deterministic_and_uniform() {
        let a: Vec<u32> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u32()).collect()
        };
        let b: Vec<u32> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u32()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, {
            let mut r = Rng::new(8);
            (0..5).map(|_| r.next_u32()).collect::<Vec<_>>()
        });
        let mut r = Rng::new(1);
        let mean: f64 = (0..100_000).map(|_| f64::from(r.next_f32())).sum::<f64>() / 1e5;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        let mut s = Sampler::new(sampling(None), &[]);
        assert_eq!(s.choose(&mut [0.5, 2.0, 2.0, -1.0]), 1);
    }

    /// Hugging Face's repetition penalty divides positive logits and multiplies negative ones
    /// of every token seen (prompt included); OpenAI's penalties count generated tokens.
    #[test]
    fn penalties() {
        let cfg = Sampling {
            repetition_penalty: 2.0,
            ..sampling(None)
        };
        let mut s = Sampler::new(cfg, &[0, 1]);
        let mut l = [3.0, -1.0, 2.0];
        assert_eq!(s.choose(&mut l), 2);
        assert_eq!(l, [1.5, -2.0, 2.0]);
        let cfg = Sampling {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..sampling(None)
        };
        let mut s = Sampler::new(cfg, &[0]);
        s.push(2);
        s.push(2);
        let mut l = [1.0, 0.0, 1.9];
        assert_eq!(s.choose(&mut l), 0);
        assert_eq!(l, [1.0, 0.0, 1.9 - 0.5 - 0.5]);
    }

    /// Sampled frequencies follow the softmax at temperature T; top-k, top-p and min-p never
    /// pick outside their sets.
    #[test]
    fn sampling_follows_the_distribution_and_its_cuts() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let t = 0.7;
        let z: f64 = logits.iter().map(|&l| (f64::from(l) / t).exp()).sum();
        let want: Vec<f64> = logits
            .iter()
            .map(|&l| (f64::from(l) / t).exp() / z)
            .collect();
        let mut s = Sampler::new(sampling(Some(seeded(t as f32, 0, 1.0, 0.0, 3))), &[]);
        let mut counts = [0usize; 4];
        let n = 40_000;
        for _ in 0..n {
            counts[s.choose(&mut logits.clone()) as usize] += 1;
        }
        for (c, w) in counts.iter().zip(&want) {
            assert!(
                (*c as f64 / n as f64 - w).abs() < 0.01,
                "{counts:?} vs {want:?}"
            );
        }
        let mut s = Sampler::new(sampling(Some(seeded(1.0, 2, 1.0, 0.0, 4))), &[]);
        assert!(
            (0..2000).all(|_| s.choose(&mut logits.clone()) < 2),
            "top-k 2"
        );
        // Probabilities at T = 1: 0.644, 0.237, 0.087, 0.032; top-p 0.8 keeps two.
        let mut s = Sampler::new(sampling(Some(seeded(1.0, 0, 0.8, 0.0, 5))), &[]);
        assert!(
            (0..2000).all(|_| s.choose(&mut logits.clone()) < 2),
            "top-p 0.8"
        );
        // min-p 0.3: 0.3·0.644 = 0.193 keeps two.
        let mut s = Sampler::new(sampling(Some(seeded(1.0, 0, 1.0, 0.3, 6))), &[]);
        assert!(
            (0..2000).all(|_| s.choose(&mut logits.clone()) < 2),
            "min-p 0.3"
        );
        // The same seed, the same draws.
        let draws = |seed| {
            let mut s = Sampler::new(sampling(Some(seeded(1.0, 0, 1.0, 0.0, seed))), &[]);
            (0..50)
                .map(|_| s.choose(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(9), draws(9));
        assert_ne!(draws(9), draws(10));
    }
}
