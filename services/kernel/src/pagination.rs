//! List pagination as every contract defines it (STYLE §7): `page_size` with a default and a
//! cap, and an opaque `page_token` that is really a keyset cursor. Tokens are base64url JSON,
//! so a service can change what its cursor holds without breaking the contract; a token
//! that does not decode is `INVALID_ARGUMENT`, never a server error.

use crate::error::{FieldViolation, invalid_argument};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;

/// The effective page size: `default` for 0, at most `max`, `INVALID_ARGUMENT` when negative.
pub fn page_size(requested: i32, default: i64, max: i64) -> Result<i64, Status> {
    match requested {
        n if n < 0 => Err(invalid_argument([FieldViolation::new("page_size", "must not be negative")])),
        0 => Ok(default),
        n => Ok(i64::from(n).min(max)),
    }
}

/// Encodes a cursor as a page token.
pub fn encode<C: Serialize>(cursor: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// Decodes a page token; an empty token is the first page (`None`).
pub fn decode<C: DeserializeOwned>(token: &str) -> Result<Option<C>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            invalid_argument([FieldViolation::new("page_token", "is not a token this list returned")])
        })
}

/// Splits a fetched page (queried with `limit + 1` rows) into the page and the next token.
pub fn page<T, C: Serialize>(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> C) -> (Vec<T>, String) {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        let token = rows.last().map(|last| encode(&cursor_of(last))).unwrap_or_default();
        (rows, token)
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_cap_and_refuse_negatives() {
        assert_eq!(page_size(0, 50, 200).unwrap(), 50);
        assert_eq!(page_size(500, 50, 200).unwrap(), 200);
        assert_eq!(page_size(7, 50, 200).unwrap(), 7);
        assert_eq!(page_size(-1, 50, 200).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_invalid() {
        let token = encode(&(42_i64, "abc"));
        assert_eq!(decode::<(i64, String)>(&token).unwrap(), Some((42, "abc".to_owned())));
        assert_eq!(decode::<(i64, String)>("").unwrap(), None);
        for garbage in ["!!!", "bm90IGpzb24", &encode(&"wrong shape")] {
            assert_eq!(
                decode::<(i64, String)>(garbage).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_full_page_carries_a_token() {
        let (rows, token) = page(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(rows, [1, 2]);
        assert_eq!(decode::<i32>(&token).unwrap(), Some(2));
        let (rows, token) = page(vec![1, 2], 2, |n| *n);
        assert_eq!((rows.len(), token.as_str()), (2, ""));
    }
}
