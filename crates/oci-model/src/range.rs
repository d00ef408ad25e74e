//! The `Range` header of a blob GET (RFC 9110 §14), as the gateway and a blob node's own
//! endpoint both answer it.

/// How a blob GET answers a `Range` request header (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range`: send the whole blob with 200.
    Whole,
    /// Send bytes `start..=end` with 206.
    Part { start: u64, end: u64 },
    /// The range starts past the end: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Interprets a `Range` header against a blob of `size` bytes. Only one `bytes` range is served;
/// multiple ranges, other units and malformed values are ignored (200), which RFC 9110 permits.
pub fn range_request(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |part: &str| {
        let part = part.trim();
        let all_digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        all_digits.then(|| part.parse::<u64>().ok()).flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `bytes=-n`: the last n bytes.
        (true, _, Some(suffix)) if suffix == 0 || size == 0 => RangeRequest::Unsatisfiable,
        (true, _, Some(suffix)) => RangeRequest::Part {
            start: size.saturating_sub(suffix),
            end: size - 1,
        },
        (false, Some(start), _) if start >= size => RangeRequest::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => RangeRequest::Part {
            start,
            end: size - 1,
        },
        (false, Some(start), Some(end)) if start <= end => RangeRequest::Part {
            start,
            end: end.min(size - 1),
        },
        _ => RangeRequest::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_requests() {
        use RangeRequest::*;
        let cases = [
            (None, 10, Whole),
            (Some("bytes=0-4"), 10, Part { start: 0, end: 4 }),
            (Some("bytes=5-"), 10, Part { start: 5, end: 9 }),
            (Some("bytes=5-100"), 10, Part { start: 5, end: 9 }),
            (Some("bytes=-3"), 10, Part { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Part { start: 0, end: 9 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=4-2"), 10, Whole),
            (Some("bytes=0-1,4-5"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=x-"), 10, Whole),
            (Some("bytes=-"), 10, Whole),
            (Some("bytes=+1-2"), 10, Whole),
            (Some("bytes=a-1"), 10, Whole),
            (Some("bytes=99999999999999999999999-"), 10, Whole),
            (Some("bytes=-5"), 0, Unsatisfiable),
        ];
        for (value, size, expected) in cases {
            assert_eq!(range_request(value, size), expected, "{value:?} of {size}");
        }
    }
}
