//! Kubernetes quantities as numbers, for the few places the operator needs bytes.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value of a quantity in base units, rounded up (`1.5Gi` → 1610612736, `500m` → 1).
/// `None` for a malformed quantity or one past `u64`.
pub fn to_units(quantity: &Quantity) -> Option<u64> {
    let (top, bottom) = ratio(quantity)?;
    u64::try_from(top.div_ceil(bottom)).ok()
}

/// Whether two quantities are the same amount, exactly (`1.5Gi` and `1536Mi`, `1` and
/// `1000m`; not `1` and `100m`, which [`to_units`] rounds alike).
pub fn same_amount(a: &Quantity, b: &Quantity) -> bool {
    match (ratio(a), ratio(b)) {
        (Some((a_top, a_bottom)), Some((b_top, b_bottom))) => {
            match (a_top.checked_mul(b_bottom), b_top.checked_mul(a_bottom)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        _ => false,
    }
}

/// The quantity as an exact fraction `top / bottom` of base units.
fn ratio(quantity: &Quantity) -> Option<(u128, u128)> {
    let text = quantity.0.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits / 10^scale * multiplier, kept exact in u128.
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let scale = fraction.len() as u32;
    let (numerator, denominator): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1000u128.pow(2), 1),
        "G" => (1000u128.pow(3), 1),
        "T" => (1000u128.pow(4), 1),
        "P" => (1000u128.pow(5), 1),
        "E" => (1000u128.pow(6), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exp if exp.starts_with(['e', 'E']) => {
            let power: u32 = exp[1..].parse().ok()?;
            (10u128.checked_pow(power)?, 1)
        }
        _ => return None,
    };
    let top = digits.checked_mul(numerator)?;
    let bottom = 10u128.checked_pow(scale)?.checked_mul(denominator)?;
    Some((top, bottom))
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_amount_is_exact() {
        let q = |s: &str| super::Quantity(s.to_owned());
        assert!(super::same_amount(&q("1.5Gi"), &q("1536Mi")));
        assert!(super::same_amount(&q("1"), &q("1000m")));
        assert!(!super::same_amount(&q("1"), &q("100m")));
        assert!(!super::same_amount(&q("2"), &q("1500m")));
        assert!(!super::same_amount(&q("x"), &q("x")));
    }

    use super::*;

    fn q(s: &str) -> Option<u64> {
        to_units(&Quantity(s.into()))
    }

    #[test]
    fn quantities() {
        assert_eq!(q("100Gi"), Some(100 << 30));
        assert_eq!(q("1.5Gi"), Some(3 << 29));
        assert_eq!(q("500M"), Some(500_000_000));
        assert_eq!(q("2"), Some(2));
        assert_eq!(q("500m"), Some(1));
        assert_eq!(q("2000m"), Some(2));
        assert_eq!(q("1e3"), Some(1000));
        assert_eq!(q("0.5"), Some(1));
        for bad in ["", "Gi", "1.2.3", "10GB", "-1", "99999999999999999999Ei"] {
            assert_eq!(q(bad), None, "{bad}");
        }
    }
}
