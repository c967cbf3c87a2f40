//! Fast, exact number formatting for the export writers and the tariff summaries: at most N
//! decimals, rounded half away from zero, trailing zeros and a bare point dropped.

/// Appends `x` with at most `decimals` decimals (rounded half away from zero, trailing zeros
/// and a bare point dropped). Non-finite values append nothing.
pub fn push_num(out: &mut Vec<u8>, x: f64, decimals: u8) {
    match decimals {
        0 => fixed::<0>(out, x),
        1 => fixed::<1>(out, x),
        2 => fixed::<2>(out, x),
        3 => fixed::<3>(out, x),
        4 => fixed::<4>(out, x),
        5 => fixed::<5>(out, x),
        6 => fixed::<6>(out, x),
        7 => fixed::<7>(out, x),
        8 => fixed::<8>(out, x),
        _ => fixed::<9>(out, x),
    }
}

/// `x` rounded to `decimals` decimals exactly as [`push_num`] writes it: the nearest f64 to
/// the decimal text (for typed formats whose cells must equal the CSV's).
pub fn round_to(x: f64, decimals: u8) -> f64 {
    let pow = 10f64.powi(i32::from(decimals.min(9)));
    let a = (x * pow).abs();
    if !x.is_finite() || a >= 9.0e15 {
        return x;
    }
    let t = a as i64;
    let n = (t + i64::from(a - t as f64 >= 0.5)) as f64 / pow;
    if x < 0.0 { -n } else { n }
}

/// [`push_num`] with the decimals known at compile time (divisions become multiplications).
/// Rounds half away from zero without a libm call: the fraction of a value below 2^53 is exact.
#[inline]
fn fixed<const D: usize>(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        return;
    }
    let pow = 10u64.pow(D as u32);
    let scaled = x * pow as f64;
    let a = scaled.abs();
    if a >= 9.0e15 {
        out.extend_from_slice(format!("{x:.D$}").as_bytes());
        return;
    }
    let t = a as i64 as u64;
    let mut n = t + u64::from(a - t as i64 as f64 >= 0.5);
    if n == 0 {
        out.push(b'0');
        return;
    }
    // Digits from the right into a stack buffer, two at a time: the fraction without its
    // trailing zeros, the point, the integer part, the sign.
    let mut buf = [0u8; 24];
    let mut pos = buf.len();
    let mut width = D;
    while width > 0 && n.is_multiple_of(10) {
        n /= 10;
        width -= 1;
    }
    let mut frac_left = width;
    while frac_left >= 2 {
        put2(&mut buf, &mut pos, n % 100);
        n /= 100;
        frac_left -= 2;
    }
    if frac_left == 1 {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    if width > 0 {
        pos -= 1;
        buf[pos] = b'.';
    }
    while n >= 100 {
        put2(&mut buf, &mut pos, n % 100);
        n /= 100;
    }
    if n >= 10 {
        put2(&mut buf, &mut pos, n);
    } else {
        pos -= 1;
        buf[pos] = b'0' + n as u8;
    }
    if scaled < 0.0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    out.extend_from_slice(&buf[pos..]);
}

/// Puts two digits of `d` (< 100) before `pos`.
fn put2(buf: &mut [u8; 24], pos: &mut usize, d: u64) {
    *pos -= 2;
    let i = d as usize * 2;
    buf[*pos..*pos + 2].copy_from_slice(&PAIRS[i..i + 2]);
}

/// "00" to "99".
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn num(x: f64, d: u8) -> String {
        let mut v = Vec::new();
        push_num(&mut v, x, d);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn numbers_render_exactly_and_trim() {
        assert_eq!(num(45.2, 3), "45.2");
        assert_eq!(num(45.0, 3), "45");
        assert_eq!(num(0.045, 6), "0.045");
        assert_eq!(num(-1.5, 0), "-2");
        assert_eq!(num(1.005, 2), "1"); // 1.005 is 1.00499999… in binary
        assert_eq!(num(0.000001, 6), "0.000001");
        assert_eq!(num(123.456789, 2), "123.46");
        assert_eq!(num(-0.0004, 3), "0");
        assert_eq!(num(1e300, 2).len(), 304);
        assert_eq!(num(f64::NAN, 2), "");
        assert_eq!(num(2.5, 0), "3");
        assert_eq!(num(-2.5, 0), "-3");
        assert_eq!(num(0.0005, 3), "0.001");
        assert_eq!(num(12.000_25, 4), "12.0003"); // 120002.5 after scaling: away from zero
        assert_eq!(num(7.0, 9), "7");
    }

    #[test]
    fn numbers_match_rounding_by_the_float_library() {
        // The integer rounding in `fixed` against f64::round on the same scaled value.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 4_000_000_000) as f64 / 997.0 - 2_000_000.0;
            for d in [0u8, 1, 2, 3, 4, 6, 9] {
                let scaled = (v * 10f64.powi(i32::from(d))).round();
                let want = if scaled == 0.0 {
                    "0".to_string()
                } else {
                    let s = format!("{:.*}", usize::from(d), scaled / 10f64.powi(i32::from(d)));
                    if s.contains('.') {
                        s.trim_end_matches('0').trim_end_matches('.').to_string()
                    } else {
                        s
                    }
                };
                assert_eq!(num(v, d), want, "{v} with {d} decimals");
            }
        }
    }
}
