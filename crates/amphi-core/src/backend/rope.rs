//! Rotary position embeddings: the inverse frequencies of each scaling variant Hugging Face
//! configs name (`default`, `linear`, `dynamic`, `llama3`, `yarn`, `longrope`), and the tables
//! of cosines and sines that [`Backend::rope`](super::Backend::rope) rotates by.
//!
//! Both config forms are read: Transformers 5's `rope_parameters` (one set, or one per layer
//! type as Gemma 3 writes it) and the older `rope_theta` + `rope_scaling`. Angles are computed
//! as Transformers computes them, in f32 (`inv_freq · position` rounded to f32, then its
//! cosine), so that long positions round as in the reference; the table is computed once per
//! step on the host, in the same code on every backend and host.

use serde::Deserialize;

use super::RopeTable;
use crate::error::{Error, Result};

/// A rotary embedding's parameters as a config writes them (`rope_parameters`, or
/// `rope_scaling` with `rope_theta` beside it).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RopeParameters {
    pub rope_theta: Option<f64>,
    #[serde(alias = "type")]
    pub rope_type: Option<String>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    pub beta_fast: Option<f64>,
    pub beta_slow: Option<f64>,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
    pub attention_factor: Option<f64>,
    pub short_factor: Option<Vec<f64>>,
    pub long_factor: Option<Vec<f64>>,
    pub partial_rotary_factor: Option<f64>,
}

impl RopeParameters {
    /// The parameters a config gives layers of `layer_type` (`full_attention`,
    /// `sliding_attention`; `None` for models with one kind of layer): `rope_parameters` (per
    /// layer type when it is keyed by them), else `rope_scaling` with the top-level
    /// `rope_theta` (and Gemma 3's `rope_local_base_freq` for sliding layers).
    pub fn from_config(config: &serde_json::Value, layer_type: Option<&str>) -> Result<Self> {
        let parse =
            |v: &serde_json::Value| Self::deserialize(v).map_err(|e| invalid(e.to_string()));
        let mut p = match config.get("rope_parameters") {
            Some(v) if v.is_object() => match layer_type.and_then(|t| v.get(t)) {
                Some(per_type) => parse(per_type)?,
                None => parse(v)?,
            },
            _ => match config.get("rope_scaling") {
                Some(v) if v.is_object() => parse(v)?,
                _ => Self::default(),
            },
        };
        let top = |key: &str| config.get(key).and_then(serde_json::Value::as_f64);
        if p.rope_theta.is_none() {
            p.rope_theta = match layer_type {
                Some("sliding_attention") => top("rope_local_base_freq").or(top("rope_theta")),
                _ => top("rope_theta"),
            };
        }
        if p.partial_rotary_factor.is_none() {
            p.partial_rotary_factor = top("partial_rotary_factor");
        }
        Ok(p)
    }
}

/// The inverse frequencies of one rotary embedding and how they change with the context.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rope {
    /// Rotated values per head (even; `head_dim` unless a partial rotary factor says less).
    pub rotary_dim: usize,
    base: f64,
    inv_freq: Vec<f64>,
    /// Multiplies the cosines and sines (YaRN's and LongRoPE's attention factor).
    attention_factor: f64,
    /// What changes the frequencies with the context length.
    dynamic: Dynamic,
}

#[derive(Debug, Clone, PartialEq)]
enum Dynamic {
    None,
    /// Dynamic NTK: past `max_positions`, the base grows with the context.
    Ntk {
        factor: f64,
        max_positions: usize,
    },
    /// LongRoPE: the long factors past `original`, else the short ones.
    LongRope {
        original: usize,
        short: Vec<f64>,
        long: Vec<f64>,
    },
}

fn invalid(message: String) -> Error {
    Error::InvalidConfig {
        file: "config.json".to_owned(),
        message: format!("rope parameters: {message}"),
    }
}

/// `1 / base^(2i/dim)` for `i < dim/2`, through f32 as Transformers computes it.
fn default_inv_freq(base: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| f64::from((1.0 / base.powf((2 * i) as f64 / dim as f64)) as f32))
        .collect()
}

/// YaRN's attention scaling: `0.1 · m · ln(scale) + 1` past a scale of 1.
fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

impl Rope {
    /// The embedding of a head of `head_dim` values, for a model whose context is
    /// `max_positions` (`max_position_embeddings`).
    pub fn new(p: &RopeParameters, head_dim: usize, max_positions: usize) -> Result<Self> {
        let base = p.rope_theta.unwrap_or(10_000.0);
        let partial = p.partial_rotary_factor.unwrap_or(1.0);
        let rotary_dim = ((head_dim as f64 * partial) as usize) & !1;
        if base.is_nan() || base <= 1.0 || rotary_dim == 0 || rotary_dim > head_dim {
            return Err(invalid(format!(
                "theta {base}, {rotary_dim} rotary values of a {head_dim}-value head"
            )));
        }
        let dim = rotary_dim;
        let factor = p.factor.unwrap_or(1.0);
        let need_factor = |what: &str| {
            if factor > 0.0 && factor.is_finite() {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{what} needs a positive factor, not {factor}"
                )))
            }
        };
        let original = p.original_max_position_embeddings.unwrap_or(max_positions);
        let mut rope = Self {
            rotary_dim,
            base,
            inv_freq: default_inv_freq(base, dim),
            attention_factor: 1.0,
            dynamic: Dynamic::None,
        };
        match p.rope_type.as_deref().unwrap_or("default") {
            "default" => {}
            "linear" => {
                need_factor("linear")?;
                rope.inv_freq.iter_mut().for_each(|f| *f /= factor);
            }
            "dynamic" => {
                need_factor("dynamic")?;
                rope.dynamic = Dynamic::Ntk {
                    factor,
                    max_positions: original,
                };
            }
            "llama3" => {
                need_factor("llama3")?;
                let low = p.low_freq_factor.unwrap_or(1.0);
                let high = p.high_freq_factor.unwrap_or(4.0);
                if high.is_nan() || low.is_nan() || high <= low {
                    return Err(invalid(format!(
                        "llama3 needs high_freq_factor > low_freq_factor ({high}, {low})"
                    )));
                }
                let old = original as f64;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                for f in &mut rope.inv_freq {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    let scaled = if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    let smooth = (old / wavelen - low) / (high - low);
                    let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                    *f = if medium {
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
            "yarn" => {
                need_factor("yarn")?;
                rope.attention_factor =
                    p.attention_factor
                        .unwrap_or_else(|| match (p.mscale, p.mscale_all_dim) {
                            (Some(m), Some(all)) => {
                                yarn_mscale(factor, m) / yarn_mscale(factor, all)
                            }
                            _ => yarn_mscale(factor, 1.0),
                        });
                let (fast, slow) = (p.beta_fast.unwrap_or(32.0), p.beta_slow.unwrap_or(1.0));
                let correction = |rotations: f64| {
                    dim as f64 * (original as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * base.ln())
                };
                let lo = correction(fast).floor().max(0.0);
                let mut hi = correction(slow).ceil().min(dim as f64 - 1.0);
                if lo == hi {
                    hi += 0.001;
                }
                for (i, f) in rope.inv_freq.iter_mut().enumerate() {
                    let ramp = ((i as f64 - lo) / (hi - lo)).clamp(0.0, 1.0);
                    let extrapolation = 1.0 - ramp;
                    *f = *f / factor * (1.0 - extrapolation) + *f * extrapolation;
                }
            }
            "longrope" => {
                let (short, long) = match (&p.short_factor, &p.long_factor) {
                    (Some(s), Some(l)) if s.len() == dim / 2 && l.len() == dim / 2 => {
                        (s.clone(), l.clone())
                    }
                    _ => {
                        return Err(invalid(format!(
                            "longrope needs short_factor and long_factor of {} values",
                            dim / 2
                        )));
                    }
                };
                let scale = max_positions as f64 / original as f64;
                rope.attention_factor = p.attention_factor.unwrap_or(if scale <= 1.0 {
                    1.0
                } else {
                    (1.0 + scale.ln() / (original as f64).ln()).sqrt()
                });
                rope.dynamic = Dynamic::LongRope {
                    original,
                    short,
                    long,
                };
            }
            other => {
                return Err(invalid(format!(
                    "rope type {other:?} (amphi reads default, linear, dynamic, llama3, yarn, longrope)"
                )));
            }
        }
        Ok(rope)
    }

    /// The inverse frequencies for a context of `len` positions.
    pub fn inv_freq(&self, len: usize) -> Vec<f64> {
        match &self.dynamic {
            Dynamic::None => self.inv_freq.clone(),
            Dynamic::Ntk {
                factor,
                max_positions,
            } => {
                if len <= *max_positions {
                    return self.inv_freq.clone();
                }
                let dim = self.rotary_dim as f64;
                let grown = factor * len as f64 / *max_positions as f64 - (factor - 1.0);
                default_inv_freq(self.base * grown.powf(dim / (dim - 2.0)), self.rotary_dim)
            }
            Dynamic::LongRope {
                original,
                short,
                long,
            } => {
                let ext = if len > *original { long } else { short };
                self.inv_freq.iter().zip(ext).map(|(f, e)| f / e).collect()
            }
        }
    }

    /// The cosines and sines of `positions` (one row each), for a context that reaches
    /// `context` positions (what the dynamic variants scale by; at least the largest position
    /// plus one).
    pub fn table(&self, positions: &[u32], context: usize) -> RopeTable {
        let top = positions.iter().max().map_or(0, |&p| p as usize + 1);
        let inv: Vec<f32> = self
            .inv_freq(context.max(top))
            .iter()
            .map(|&f| f as f32)
            .collect();
        let half = self.rotary_dim / 2;
        let mut cos_sin = Vec::with_capacity(positions.len() * self.rotary_dim);
        let k = self.attention_factor;
        for &p in positions {
            let angles = inv.iter().map(|&f| f64::from(f * p as f32));
            cos_sin.extend(angles.clone().map(|a| (a.cos() * k) as f32));
            cos_sin.extend(angles.map(|a| (a.sin() * k) as f32));
        }
        debug_assert_eq!(cos_sin.len(), positions.len() * 2 * half);
        RopeTable {
            rows: positions.len(),
            rotary_dim: self.rotary_dim,
            cos_sin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rope(config: serde_json::Value, head_dim: usize, max: usize) -> Rope {
        Rope::new(
            &RopeParameters::from_config(&config, None).expect("parameters"),
            head_dim,
            max,
        )
        .expect("rope")
    }

    /// Both config forms, and Gemma 3's per-layer-type parameters.
    #[test]
    fn reads_both_config_forms() {
        let new = json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}});
        let old = json!({"rope_theta": 500000.0, "rope_scaling": null});
        assert_eq!(rope(new, 16, 256), rope(old, 16, 256));
        let gemma = json!({
            "rope_parameters": {
                "full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
                "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}
            }
        });
        let sliding =
            RopeParameters::from_config(&gemma, Some("sliding_attention")).expect("parameters");
        assert_eq!(sliding.rope_theta, Some(10_000.0));
        let old_gemma = json!({"rope_theta": 1e6, "rope_local_base_freq": 1e4});
        let sliding =
            RopeParameters::from_config(&old_gemma, Some("sliding_attention")).expect("parameters");
        assert_eq!(sliding.rope_theta, Some(10_000.0));
        assert!(
            Rope::new(
                &RopeParameters {
                    rope_type: Some("su".into()),
                    ..Default::default()
                },
                16,
                256
            )
            .is_err(),
            "an unknown rope type is refused"
        );
    }

    /// Llama 3.2's published scaling (factor 32, low 1, high 4, original 8192, theta 500000)
    /// on a 64-value head, against the formula written out in f64: the highest frequencies
    /// are kept, the lowest divided by the factor, the middle ones blended.
    #[test]
    fn llama3_scaling() {
        let r = rope(
            json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}),
            64,
            131_072,
        );
        let plain = default_inv_freq(500_000.0, 64);
        let got = r.inv_freq(1);
        assert_eq!(got[0], plain[0], "the highest frequency is kept");
        assert!(
            (got[31] - plain[31] / 32.0).abs() < 1e-18,
            "the lowest is divided"
        );
        let mut blended = 0;
        for (g, p) in got.iter().zip(&plain) {
            let wavelen = 2.0 * std::f64::consts::PI / p;
            if (8192.0 / 4.0..=8192.0).contains(&wavelen) {
                let smooth = (8192.0 / wavelen - 1.0) / 3.0;
                let want = (1.0 - smooth) * p / 32.0 + smooth * p;
                assert!((g - want).abs() <= 1e-12 * want, "{g} vs {want}");
                blended += 1;
            }
        }
        assert!(blended > 0, "some frequencies are in the blended band");
    }

    /// Linear scaling divides every frequency; dynamic NTK changes nothing within the context
    /// and raises the base past it; YaRN's attention factor scales the table.
    #[test]
    fn linear_dynamic_and_yarn() {
        let plain = default_inv_freq(10_000.0, 32);
        let linear = rope(
            json!({"rope_scaling": {"type": "linear", "factor": 8.0}}),
            32,
            256,
        );
        for (l, p) in linear.inv_freq(1).iter().zip(&plain) {
            assert!((l - p / 8.0).abs() <= 1e-15 * p);
        }
        let dynamic = rope(
            json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}),
            32,
            256,
        );
        assert_eq!(dynamic.inv_freq(256), plain);
        let longer = dynamic.inv_freq(512);
        let base = 10_000.0 * (2.0f64 * 512.0 / 256.0 - 1.0).powf(32.0 / 30.0);
        assert_eq!(longer, default_inv_freq(base, 32));
        assert!(longer[5] < plain[5]);
        let yarn = rope(
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                "original_max_position_embeddings": 256}}),
            32,
            1024,
        );
        let t = yarn.table(&[0, 3], 4);
        let k = 0.1 * 4f64.ln() + 1.0;
        assert!((f64::from(t.cos_sin[0]) - k).abs() < 1e-6, "cos 0 · mscale");
        let f = yarn.inv_freq(1);
        assert_eq!(f[0], plain[0], "high frequencies extrapolate");
        assert!(
            (f[15] - plain[15] / 4.0).abs() < 1e-18,
            "low ones interpolate"
        );
    }

    /// The table: row r holds cos then sin of `position · inv_freq`.
    #[test]
    fn table_rows() {
        let r = rope(json!({"rope_theta": 10000.0}), 8, 64);
        let t = r.table(&[0, 5, 2], 6);
        assert_eq!((t.rows, t.rotary_dim, t.cos_sin.len()), (3, 8, 24));
        assert_eq!(&t.cos_sin[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let f = default_inv_freq(10_000.0, 8);
        for (i, &f) in f.iter().enumerate() {
            let a = f64::from(f as f32 * 5.0);
            assert_eq!(t.cos_sin[8 + i], a.cos() as f32);
            assert_eq!(t.cos_sin[12 + i], a.sin() as f32);
        }
        let partial = rope(json!({"partial_rotary_factor": 0.5}), 16, 64);
        assert_eq!(partial.rotary_dim, 8);
    }
}
