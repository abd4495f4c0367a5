//! Arbitrary-precision unsigned integers (little-endian `u64` limbs) for the exact fallback of
//! the sampler's decisions and for building its constant tables; never used on the fast path.
//!
//! A few dozen lines of schoolbook arithmetic instead of a bignum crate: only `+`, saturating
//! `−`, `×`, division by a word and limb shifts are needed, each with explicit rounding
//! direction, and the privacy argument is easier to check when all of it is in view.
use std::cmp::Ordering;

pub(super) type Big = Vec<u64>;

fn trim(mut a: Big) -> Big {
    while a.last() == Some(&0) {
        a.pop();
    }
    a
}

#[cfg(test)]
pub(super) fn from_u128(x: u128) -> Big {
    trim(vec![x as u64, (x >> 64) as u64])
}

/// `2^(64·limbs)`.
pub(super) fn pow2_limbs(limbs: usize) -> Big {
    let mut v = vec![0; limbs];
    v.push(1);
    v
}

pub(super) fn cmp(a: &[u64], b: &[u64]) -> Ordering {
    let len = |x: &[u64]| x.len() - x.iter().rev().take_while(|&&l| l == 0).count();
    let (la, lb) = (len(a), len(b));
    if la != lb {
        return la.cmp(&lb);
    }
    for i in (0..la).rev() {
        match a[i].cmp(&b[i]) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

pub(super) fn add(a: &[u64], b: &[u64]) -> Big {
    let (a, b) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u64;
    for (i, &limb) in a.iter().enumerate() {
        let s = u128::from(limb) + u128::from(*b.get(i).unwrap_or(&0)) + u128::from(carry);
        out.push(s as u64);
        carry = (s >> 64) as u64;
    }
    out.push(carry);
    trim(out)
}

/// `max(a − b, 0)`.
pub(super) fn sub_sat(a: &[u64], b: &[u64]) -> Big {
    if cmp(a, b) != Ordering::Greater {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0u64;
    for (i, &limb) in a.iter().enumerate() {
        let (d1, b1) = limb.overflowing_sub(*b.get(i).unwrap_or(&0));
        let (d2, b2) = d1.overflowing_sub(borrow);
        out.push(d2);
        borrow = u64::from(b1 || b2);
    }
    trim(out)
}

pub(super) fn mul_small(a: &[u64], m: u64) -> Big {
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u64;
    for &l in a {
        let p = u128::from(l) * u128::from(m) + u128::from(carry);
        out.push(p as u64);
        carry = (p >> 64) as u64;
    }
    out.push(carry);
    trim(out)
}

/// `⌊a/d⌋` (`up = false`) or `⌈a/d⌉` (`up = true`), `d ≥ 1`.
pub(super) fn div_small(a: &[u64], d: u64, up: bool) -> Big {
    let mut out = vec![0; a.len()];
    let mut rem = 0u128;
    let d = u128::from(d);
    for i in (0..a.len()).rev() {
        let cur = (rem << 64) | u128::from(a[i]);
        out[i] = (cur / d) as u64;
        rem = cur % d;
    }
    let out = trim(out);
    if up && rem != 0 { add(&out, &[1]) } else { out }
}

pub(super) fn mul(a: &[u64], b: &[u64]) -> Big {
    let mut out = vec![0u64; a.len() + b.len() + 1];
    for (i, &x) in a.iter().enumerate() {
        let mut carry = 0u128;
        for (j, &y) in b.iter().enumerate() {
            let t = u128::from(x) * u128::from(y) + u128::from(out[i + j]) + carry;
            out[i + j] = t as u64;
            carry = t >> 64;
        }
        let mut k = i + b.len();
        while carry != 0 {
            let t = u128::from(out[k]) + carry;
            out[k] = t as u64;
            carry = t >> 64;
            k += 1;
        }
    }
    trim(out)
}

/// `⌊a / 2^(64·limbs)⌋` or, with `up`, the ceiling.
pub(super) fn shr_limbs(a: &[u64], limbs: usize, up: bool) -> Big {
    if a.len() <= limbs {
        return if up && a.iter().any(|&l| l != 0) { vec![1] } else { Vec::new() };
    }
    let out = trim(a[limbs..].to_vec());
    if up && a[..limbs].iter().any(|&l| l != 0) { add(&out, &[1]) } else { out }
}

/// `a · 2^(64·limbs)`.
pub(super) fn shl_limbs(a: &[u64], limbs: usize) -> Big {
    let mut out = vec![0; limbs];
    out.extend_from_slice(a);
    trim(out)
}

/// The value as a `u128`, or `None` if it does not fit.
pub(super) fn to_u128(a: &[u64]) -> Option<u128> {
    let a = trim(a.to_vec());
    match a.len() {
        0 => Some(0),
        1 => Some(u128::from(a[0])),
        2 => Some(u128::from(a[0]) | u128::from(a[1]) << 64),
        _ => None,
    }
}
