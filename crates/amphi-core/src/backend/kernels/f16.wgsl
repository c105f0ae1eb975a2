// Precision prelude: weights stored as f16, products and short partial sums in f16
// (accumulated in f32 by the kernels). Needs the `shader-f16` feature.
enable f16;
alias WElem = f16;
alias Mul = f16;
