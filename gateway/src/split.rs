//! Traffic splits for gradual cut-over: per service (protobuf package), a percentage of
//! users goes to an alternate pool — an older deployment during a migration, or a canary —
//! and `use_legacy` sends everyone there. The choice hashes the package and the user, so a
//! user always lands on the same side (their stream resumes where their writes went) and
//! each service splits a different set of users.

use crate::config::ServiceRoute;

/// Buckets a percentage is counted in: 0.01 % steps.
const BUCKETS: u64 = 10_000;

/// The pool a call goes to, and whether that is the alternate.
pub fn target<'a>(route: &'a ServiceRoute, package: &str, principal: &str) -> (&'a str, bool) {
    match &route.alternate {
        Some(alternate) if route.use_legacy => (alternate, true),
        Some(alternate) if bucket(package, principal) < (route.alternate_percent * 100.0).round() as u64 => {
            (alternate, true)
        }
        _ => (&route.backend, false),
    }
}

/// FNV-1a over the package and the principal: stable across processes and releases (the
/// standard library's hasher is not), and well spread for ids differing in a few characters.
fn bucket(package: &str, principal: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in package.bytes().chain([0]).chain(principal.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The low bits of FNV are its weakest; fold the high half in.
    (hash ^ (hash >> 32)) % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(percent: f64, use_legacy: bool) -> ServiceRoute {
        ServiceRoute {
            backend: "new".into(),
            alternate: Some("old".into()),
            alternate_percent: percent,
            use_legacy,
        }
    }

    #[test]
    fn ten_percent_of_ten_thousand_users_within_two_points_and_sticky() {
        let split = route(10.0, false);
        let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let alternate = users.iter().filter(|u| target(&split, "codingagent.chat.v1", u).1).count();
        assert!((800..=1200).contains(&alternate), "{alternate} of 10000 went to the alternate");
        for user in &users[..500] {
            assert_eq!(
                target(&split, "codingagent.chat.v1", user),
                target(&split, "codingagent.chat.v1", user)
            );
        }
    }

    #[test]
    fn the_cut_over_switch_and_the_edges() {
        assert_eq!(target(&route(0.0, true), "p", "alice"), ("old", true));
        assert_eq!(target(&route(0.0, false), "p", "alice"), ("new", false));
        let all = route(100.0, false);
        assert!((0..1000).all(|i| target(&all, "p", &i.to_string()).1));
        let none = ServiceRoute { alternate: None, ..route(0.0, false) };
        assert_eq!(target(&none, "p", "alice"), ("new", false));
    }

    #[test]
    fn services_split_different_users() {
        let split = route(50.0, false);
        let differ = (0..1000)
            .filter(|i| {
                let user = format!("u{i}");
                target(&split, "codingagent.chat.v1", &user).1
                    != target(&split, "codingagent.llm.v1", &user).1
            })
            .count();
        assert!(differ > 300, "{differ}");
    }
}
