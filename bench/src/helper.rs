//! A helper process of a benchmark (the loopback floor's sender, the peer server): the
//! benchmark's own binary started with a hidden flag, which prints the port it listens on
//! first. It is killed when dropped, so a benchmark that gives up leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

#[derive(Debug)]
pub struct Helper {
    child: Child,
    /// The loopback port it printed.
    pub port: u16,
}

impl Helper {
    /// Starts `exe flag args...` and reads the port it prints; `what` names it in errors.
    pub fn start(
        exe: &std::path::Path,
        flag: &str,
        args: &[String],
        what: &str,
    ) -> Result<Self, String> {
        let child = Command::new(exe)
            .arg(flag)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the {what}: {e}"))?;
        // On an error below, the helper is stopped by its drop.
        let mut helper = Self { child, port: 0 };
        let mut line = String::new();
        if let Some(out) = helper.child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        helper.port = line
            .trim()
            .parse()
            .map_err(|_| format!("the {what} printed {line:?}, not a port"))?;
        Ok(helper)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the helper to finish on its own.
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
