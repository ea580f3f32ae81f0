//! A reflektor feeding one or more ekg hosts, wired the way an operator would run them.

use std::path::Path;

use std::time::Duration;

use anyhow::Result;

use crate::{Ekg, Reflektor, wait_until};

/// How long a fresh stack may take until every host is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The secret reflektor signs with and ekg verifies, in tests.
pub const SECRET: &str = "test-secret-0123456789";
/// The intake token in tests.
pub const TOKEN: &str = "test-token";

/// reflektor plus `n` ekg hosts, all on loopback ephemeral ports, sharing a signing secret.
pub struct Stack {
    pub reflektor: Reflektor,
    pub ekgs: Vec<Ekg>,
}

impl Stack {
    /// Start `n` ekg hosts with `ekg_extra` flags, then reflektor delivering to all of them, and
    /// wait until every host is ready (it has heard from reflektor and caught up).
    pub async fn start(
        dir: &Path,
        n: usize,
        ekg_extra: &[&str],
        reflektor_extra: &[&str],
    ) -> Result<Stack> {
        let mut ekgs = Vec::with_capacity(n);
        for _ in 0..n {
            let mut args = vec!["--secret", SECRET];
            args.extend_from_slice(ekg_extra);
            ekgs.push(Ekg::start(dir, &args).await?);
        }
        let urls: Vec<String> = ekgs.iter().map(|e| e.svc.url()).collect();
        let mut args = vec!["--secret", SECRET, "--token", TOKEN];
        for u in &urls {
            args.push("--host");
            args.push(u);
        }
        args.extend_from_slice(reflektor_extra);
        let reflektor = Reflektor::start(dir, &args).await?;
        for e in &ekgs {
            wait_until("ekg ready", READY_TIMEOUT, || e.ready()).await?;
        }
        Ok(Stack { reflektor, ekgs })
    }
}
