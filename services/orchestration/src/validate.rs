//! Request checks shared by the task RPCs, as additions to the kernel's [`Violations`].

use crate::config::BudgetsConfig;
use crate::store::tasks::Budget;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use std::net::IpAddr;

pub(crate) const MAX_TEXT: usize = 32_000;
pub(crate) const MAX_TITLE: usize = 200;
const MAX_LABELS: usize = 20;
const MAX_LABEL: usize = 64;
const MAX_TEST_COMMAND: usize = 1_000;
const MAX_MODEL: usize = 200;

/// The orchestration checks.
pub(crate) trait TaskChecks {
    fn task_text(&mut self, field: &str, text: &str);
    fn title(&mut self, field: &str, title: &str);
    fn labels(&mut self, field: &str, labels: &[String]);
    fn branch(&mut self, field: &str, branch: &str);
    fn test_command(&mut self, field: &str, command: &str);
    fn model(&mut self, field: &str, model: &str);
    fn strategy(&mut self, field: &str, strategy: i32);
    fn git_url(&mut self, field: &str, url: &str);
    /// A budget with defaults filled in from `defaults`; `max` caps each field.
    fn budget(
        &mut self,
        field: &str,
        budget: Option<&pb::TaskBudget>,
        defaults: Budget,
        max: Budget,
    ) -> Budget;
}

impl TaskChecks for Violations {
    fn task_text(&mut self, field: &str, text: &str) {
        if text.trim().is_empty() {
            self.add(field, "must not be empty");
        } else {
            self.text(field, text, MAX_TEXT);
        }
    }

    fn title(&mut self, field: &str, title: &str) {
        if title.contains(['\n', '\r']) {
            self.add(field, "must be one line");
        } else {
            self.text(field, title, MAX_TITLE);
        }
    }

    fn labels(&mut self, field: &str, labels: &[String]) {
        if labels.len() > MAX_LABELS {
            self.add(field, format!("at most {MAX_LABELS} labels"));
        }
        let good = |l: &String| {
            !l.is_empty()
                && l.len() <= MAX_LABEL
                && l.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        };
        if let Some(bad) = labels.iter().position(|l| !good(l)) {
            self.add(
                &format!("{field}[{bad}]"),
                format!("1..{MAX_LABEL} characters of letters, digits, '-', '_', '.', ':'"),
            );
        }
    }

    fn branch(&mut self, field: &str, branch: &str) {
        if branch.is_empty() {
            return;
        }
        let bad = branch.len() > 255
            || branch.starts_with(['-', '/', '.'])
            || branch.ends_with(['/', '.'])
            || branch.ends_with(".lock")
            || branch.contains("..")
            || branch.contains("@{")
            || branch.contains("//")
            || branch.chars().any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
        if bad {
            self.add(field, "must be a valid git branch name of at most 255 characters");
        }
    }

    fn test_command(&mut self, field: &str, command: &str) {
        self.text(field, command, MAX_TEST_COMMAND);
    }

    fn model(&mut self, field: &str, model: &str) {
        if model.chars().any(char::is_whitespace) {
            self.add(field, "must be a model id from LlmService.ListModels");
        } else {
            self.text(field, model, MAX_MODEL);
        }
    }

    fn strategy(&mut self, field: &str, strategy: i32) {
        if codingagent_proto::codingagent::common::v1::Strategy::try_from(strategy).is_err() {
            self.add(field, "must be a Strategy value");
        }
    }

    fn git_url(&mut self, field: &str, url: &str) {
        if let Err(why) = check_git_url(url) {
            self.add(field, why);
        }
    }

    fn budget(
        &mut self,
        field: &str,
        budget: Option<&pb::TaskBudget>,
        defaults: Budget,
        max: Budget,
    ) -> Budget {
        let b = budget.cloned().unwrap_or_default();
        let wall = b.max_wall_time.map(|d| if d.nanos > 0 { d.seconds + 1 } else { d.seconds }).unwrap_or(0);
        let mut pick = |name: &str, value: i64, default: i64, max: i64| -> i64 {
            if value < 0 {
                self.add(&format!("{field}.{name}"), "must not be negative");
                default
            } else if value > max {
                self.add(&format!("{field}.{name}"), format!("at most {max}"));
                default
            } else if value == 0 {
                default
            } else {
                value
            }
        };
        Budget {
            tokens: pick("max_tokens", b.max_tokens, defaults.tokens, max.tokens),
            iterations: pick(
                "max_iterations",
                i64::from(b.max_iterations),
                i64::from(defaults.iterations),
                i64::from(max.iterations),
            ) as i32,
            wall_secs: pick("max_wall_time", wall, defaults.wall_secs, max.wall_secs),
        }
    }
}

/// The per-run defaults and maxima.
pub(crate) fn run_limits(c: &BudgetsConfig) -> (Budget, Budget) {
    (
        Budget {
            tokens: c.default_run_tokens,
            iterations: c.default_run_iterations,
            wall_secs: c.default_run_wall_secs,
        },
        Budget { tokens: c.max_run_tokens, iterations: c.max_run_iterations, wall_secs: c.max_run_wall_secs },
    )
}

/// The per-task defaults and maxima (a run's maximum times the runs a task may have).
pub(crate) fn task_limits(c: &BudgetsConfig) -> (Budget, Budget) {
    let runs = i64::from(c.max_runs);
    (
        Budget {
            tokens: c.default_task_tokens,
            iterations: c.default_task_iterations,
            wall_secs: c.default_task_wall_secs,
        },
        Budget {
            tokens: c.max_run_tokens.saturating_mul(runs),
            iterations: c.max_run_iterations.saturating_mul(c.max_runs),
            wall_secs: c.max_run_wall_secs.saturating_mul(runs),
        },
    )
}

/// https:// or ssh (`ssh://…`, `git@host:owner/repo.git`) to a public host: `file://`, other
/// schemes, credentials in the URL, loopback, private and link-local addresses are refused, so
/// a task cannot make the worker clone from inside the network it runs in.
pub(crate) fn check_git_url(url: &str) -> Result<(), String> {
    if url.len() > 2_048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be a URL of at most 2048 characters without spaces".into());
    }
    let Some((host, path)) = split_git_url(url) else {
        return Err("must be an https:// or ssh URL (git@host:owner/repo.git)".into());
    };
    if url.starts_with("https://") && host.contains('@') {
        return Err("must not carry credentials; connect the repository through the github service".into());
    }
    let host = host.to_ascii_lowercase();
    if host.is_empty() || !host.contains('.') && host.parse::<IpAddr>().is_err() {
        return Err("must name a public host".into());
    }
    if host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".internal")
        || host.ends_with(".local")
    {
        return Err("must not point at this machine or an internal network".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && !is_public(ip)
    {
        return Err("must not point at a loopback, private or link-local address".into());
    }
    if path.trim_matches(['/', ':']).is_empty() {
        return Err("must name a repository (owner/name)".into());
    }
    Ok(())
}

/// The host (an `https://` userinfo left in, so it can be refused; brackets of an IPv6
/// literal removed) and the rest of an https or ssh git URL; `None` for other schemes.
fn split_git_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("ssh://").map(|r| r.split_once('@').map_or(r, |(_, host)| host)))
        .or_else(|| url.strip_prefix("git@"))?;
    Some(match rest.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').unwrap_or((bracketed, "")),
        None => rest.split_at(rest.find(['/', ':']).unwrap_or(rest.len())),
    })
}

pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// The host a valid git URL names (see [`check_git_url`]).
pub(crate) fn git_host(url: &str) -> Option<String> {
    let (host, _) = split_git_url(url)?;
    let host = host.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Refuses a host whose DNS answer includes a loopback, private or link-local address, so a
/// public-looking name cannot point the clone into the worker's network. (The check and
/// git's own lookup are separate: a name that changes its answer in between is not caught.)
pub(crate) async fn check_resolved_host(host: &str) -> Result<(), String> {
    let addresses =
        tokio::net::lookup_host((host, 443)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for address in addresses {
        if !is_public(address.ip()) {
            return Err(format!("{host} resolves to {}, which is not a public address", address.ip()));
        }
    }
    Ok(())
}

/// The title from the text's first line when none was given.
pub(crate) fn title_from(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default().trim();
    let mut title: String = line.chars().take(MAX_TITLE).collect();
    if line.chars().count() > MAX_TITLE {
        title.pop();
        title.push('…');
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_must_be_remote_and_public() {
        for good in
            ["https://github.com/acme/shop.git", "git@github.com:acme/shop.git", "ssh://git@gitlab.com/a/b"]
        {
            assert!(check_git_url(good).is_ok(), "{good}");
        }
        for bad in [
            "file:///etc",
            "http://github.com/a/b",
            "https://127.0.0.1/a/b",
            "https://localhost/a/b",
            "https://10.1.2.3/a/b",
            "https://169.254.169.254/latest",
            "https://[::1]/a/b",
            "https://[::ffff:10.0.0.1]/a/b",
            "https://user:pw@github.com/a/b",
            "https://github.com",
            "git@github.com:",
            "https://git hub.com/a",
            "ext::sh -c touch% /tmp/pwned",
            "https://metadata.internal/a",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_come_out_of_every_url_form() {
        assert_eq!(git_host("https://github.com/a/b.git").as_deref(), Some("github.com"));
        assert_eq!(git_host("git@GitLab.com:a/b.git").as_deref(), Some("gitlab.com"));
        assert_eq!(git_host("ssh://git@example.org:2222/a/b").as_deref(), Some("example.org"));
        assert_eq!(git_host("https://[2001:db8::1]/a/b").as_deref(), Some("2001:db8::1"));
        assert_eq!(git_host("file:///etc"), None);
    }

    #[tokio::test]
    async fn names_that_resolve_to_this_machine_are_refused() {
        // `localhost.` resolves from /etc/hosts on every machine, without a network.
        let refused = check_resolved_host("localhost").await.unwrap_err();
        assert!(refused.contains("not a public address"), "{refused}");
    }

    #[test]
    fn branches_follow_gits_rules() {
        let check = |b: &str| {
            let mut v = Violations::new();
            v.branch("b", b);
            v.is_empty()
        };
        assert!(check("") && check("main") && check("release/1.2") && check("feature_x-y"));
        for bad in ["-x", "a..b", "a b", "a~1", "x.lock", "a/", "a:b", "a\0", "@{u", &"x".repeat(256)] {
            assert!(!check(bad), "{bad:?}");
        }
    }

    #[test]
    fn budgets_fill_defaults_and_refuse_negative_or_oversized_values() {
        let (defaults, max) = run_limits(&BudgetsConfig::default());
        let mut v = Violations::new();
        assert_eq!(v.budget("budget", None, defaults, max), defaults);
        let asked = pb::TaskBudget { max_tokens: 1_000, max_iterations: 0, max_wall_time: None };
        assert_eq!(v.budget("budget", Some(&asked), defaults, max).tokens, 1_000);
        assert!(v.is_empty());
        let bad = pb::TaskBudget {
            max_tokens: -1,
            max_iterations: max.iterations + 1,
            max_wall_time: Some(prost_types::Duration { seconds: max.wall_secs + 1, nanos: 0 }),
        };
        v.budget("budget", Some(&bad), defaults, max);
        assert_eq!(
            v.fields().collect::<Vec<_>>(),
            ["budget.max_tokens", "budget.max_iterations", "budget.max_wall_time"]
        );
    }

    #[test]
    fn titles_come_from_the_first_line() {
        assert_eq!(title_from("  Fix paginate()\nIt is off by one"), "Fix paginate()");
        assert_eq!(title_from(&"x".repeat(300)).chars().count(), MAX_TITLE);
    }

    #[test]
    fn labels_are_short_words() {
        let mut v = Violations::new();
        v.labels("labels", &["ok".into(), "has space".into()]);
        assert_eq!(v.fields().collect::<Vec<_>>(), ["labels[1]"]);
    }
}
