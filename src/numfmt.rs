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
