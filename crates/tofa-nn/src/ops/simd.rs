//! The two macros every kernel of [`super`] is written with: `simd_fn!` (one body compiled
//! plain and with AVX2 + FMA, picked at run time) and `with_act!` (one branch-free copy of a
//! loop per activation).

/// Defines `fn $name(args)` whose body is compiled twice, for baseline x86-64 and with
/// AVX2 + FMA, and dispatches at run time. The body must not call `mul_add` (without FMA it is
/// a libm call); plain `a * b + c` keeps both versions bit-identical.
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Expands `$body` once per activation with `$f` (the function) and `$df` (its derivative)
/// bound to closures of that activation alone, so each copy of the loop is branch-free and
/// vectorises (a run-time `match` inside the loop does not).
macro_rules! with_act {
    ($a:expr, |$f:ident, $df:ident| $body:expr) => {
        match $a {
            None => {
                let $f = |x: f32| x;
                let $df = |_: f32| 1.0f32;
                $body
            }
            Some(Fn1::Relu) => {
                let $f = |x: f32| Fn1::Relu.f(x);
                let $df = |x: f32| Fn1::Relu.df(x);
                $body
            }
            Some(Fn1::Relu6) => {
                let $f = |x: f32| Fn1::Relu6.f(x);
                let $df = |x: f32| Fn1::Relu6.df(x);
                $body
            }
            Some(Fn1::Hswish) => {
                let $f = |x: f32| Fn1::Hswish.f(x);
                let $df = |x: f32| Fn1::Hswish.df(x);
                $body
            }
            Some(Fn1::Hsigmoid) => {
                let $f = |x: f32| Fn1::Hsigmoid.f(x);
                let $df = |x: f32| Fn1::Hsigmoid.df(x);
                $body
            }
        }
    };
}
