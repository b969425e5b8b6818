//! PostgreSQL access, one module per aggregate: tasks (with their change feed), runs and
//! steps, and log lines. Rows convert to contract messages in `convert`.

pub(crate) mod logs;
pub(crate) mod runs;
pub(crate) mod tasks;
