//! A program's command line as one table ([`Command`], its [`Flag`]s), which drives both the
//! parser and the help text ([`Command::usage`]).

/// A flag a program accepts, with its line of help.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// Its name, with the dashes: `--rate-hz`.
    pub name: &'static str,
    /// What its value is called in the help (`N`, `FILE`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// What it does, and its default in brackets.
    pub help: &'static str,
}

impl Flag {
    /// A flag that takes a value: `--rate-hz N`.
    pub const fn value(name: &'static str, value: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value: Some(value),
            help,
        }
    }

    /// A switch: `--timestamps`.
    pub const fn switch(name: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value: None,
            help,
        }
    }

    /// `--rate-hz N`, as the help shows it.
    pub(super) fn shown(&self) -> String {
        match self.value {
            Some(v) => format!("{} {v}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// A program's command line: its positional arguments, its flags and its help, in one table.
#[derive(Debug)]
pub struct Command {
    /// The program's name, for the usage line and error messages.
    pub name: &'static str,
    /// What follows the name on the usage line: `<port> [<backup-host:port>] [flags]`.
    pub synopsis: &'static str,
    /// What the program does, under the usage line.
    pub about: &'static str,
    /// The flags it accepts, in the order the help lists them.
    pub flags: &'static [Flag],
    /// What the help says after the flags (exit codes, an example); may be empty.
    pub notes: &'static str,
    /// How many positional arguments are required.
    pub required: usize,
    /// How many positional arguments there may be.
    pub max_positionals: usize,
}

/// The help lines' width.
const HELP_WIDTH: usize = 92;

impl Command {
    /// The help text printed by `--help` and after an error, made from the table.
    pub fn usage(&self) -> String {
        let help = Flag::switch("-h, --help", "print this help");
        let flags: Vec<&Flag> = self.flags.iter().chain([&help]).collect();
        let column = flags.iter().map(|f| f.shown().len()).max().unwrap_or(0) + 5;
        let mut out = format!("usage: {} {}\n", self.name, self.synopsis);
        if !self.about.is_empty() {
            out.push_str(&format!("\n{}\n", self.about));
        }
        out.push_str("\nflags:\n");
        for flag in flags {
            let mut line = format!("  {}", flag.shown());
            for word in flag.help.split(' ') {
                if line.len() < column {
                    line.push_str(&" ".repeat(column - line.len()));
                } else if line.len() + 1 + word.len() > HELP_WIDTH {
                    out.push_str(&line);
                    out.push('\n');
                    line = " ".repeat(column);
                } else {
                    line.push(' ');
                }
                line.push_str(word);
            }
            out.push_str(&line);
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push_str(&format!("\n{}\n", self.notes));
        }
        out.truncate(out.trim_end().len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{
        BACKUP, BENCH, PAIRSTAT, PRIMARY, PUBLISHER, REPORT, SOAK, SUBSCRIBER, TEST_PUBLISHER,
    };

    #[test]
    fn each_table_drives_its_usage_text() {
        for cmd in [
            &PRIMARY,
            &BACKUP,
            &PUBLISHER,
            &TEST_PUBLISHER,
            &SUBSCRIBER,
            &REPORT,
            &BENCH,
            &PAIRSTAT,
            &SOAK,
        ] {
            let usage = cmd.usage();
            assert!(
                usage.starts_with(&format!("usage: {} ", cmd.name)),
                "{usage}"
            );
            for flag in cmd.flags.iter() {
                let shown = format!("  {} ", flag.shown());
                assert!(
                    usage.contains(&shown),
                    "{}: {shown:?} not in\n{usage}",
                    cmd.name
                );
            }
            assert!(usage.contains("-h, --help"), "{usage}");
            for line in usage.lines().filter(|l| l.starts_with("  --")) {
                assert!(line.len() <= HELP_WIDTH, "{}: too wide: {line}", cmd.name);
            }
        }
    }
}
