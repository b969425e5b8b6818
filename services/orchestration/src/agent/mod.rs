//! The coding agent: how it sees a repository (a ranked repository map and tools to open
//! files and search, after SWE-agent's agent-computer interface), how it edits (Aider-style
//! SEARCH/REPLACE blocks with whitespace-tolerant matching, or unified diffs applied with
//! git), and the versioned prompts it is given. The strategies in `strategy` decide which
//! step comes next; this module only reads answers and changes files.

pub(crate) mod answer;
pub(crate) mod edits;
pub(crate) mod prompts;
pub(crate) mod repomap;
pub(crate) mod tools;
