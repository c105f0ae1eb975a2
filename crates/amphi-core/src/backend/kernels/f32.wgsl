// Precision prelude: weights stored and multiplied in f32.
alias WElem = f32;
alias Mul = f32;
