//! The command line, declared with clap: options shared by every form, and the
//! `copy` / `rcopy` / `queue` / `broadcast` subcommands.

use std::path::PathBuf;

use clap::parser::ValueSource;
use ssh_parallel::Amount;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  ssh-parallel -w 'web[01-20],db1' -x web07 -- uptime
  ssh-parallel -w ^hosts.txt -b -- cat /etc/debian_version
  ssh-parallel -w 'app[1-4]' -l deploy -f 2 -u 30 -- sudo systemctl restart app
  ssh-parallel -w 'db[1-3]' --json -- df -h / > df.jsonl
  ssh-parallel copy -w 'web[01-20]' app.conf /etc/app/
  ssh-parallel copy -w 'sftp[1-8]' --sftp --create-dirs -r site/ /srv/www/
  ssh-parallel rcopy -w 'web[01-20]' /var/log/syslog ./logs/

Copies: a DEST ending in '/' (or several sources) is a directory to copy
into; otherwise DEST is the copy's name (a directory copied with -r becomes
DEST, so the same copy twice gives the same tree). A source ending in '/'
copies its contents.

Node sets: 'web[01-20,30]', 'r[1-2]n[1-4]', 'web[1-9]!web5' (minus),
'a[1-4]&a[2-6]' (and), user@host[:port] entries; ^FILE reads node sets from a
file (one or more a line, '#' starts a comment), '-' from standard input.

Exit status: 0 every host succeeded; 1 some host failed; with -S the largest
remote exit status (255 for a host that gave none: connection or transfer
error); 2 usage error (bad option, node set, -o directive, unknown host);
130 interrupted (Ctrl-C: the run is cancelled, running remote commands are
hung up and what ran is summed up; a second Ctrl-C exits at once).";

/// Runs a command, or copies files, on many hosts at once over SSH.
#[derive(Parser, Debug)]
#[command(
    name = "ssh-parallel",
    version,
    about = "Run a command, or copy files, on many hosts at once over SSH (pdsh/clush style)",
    subcommand_value_name = "SUBCOMMAND",
    subcommand_help_heading = "Subcommands",
    after_help = EXAMPLES,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Options shared with the subcommands.
    #[command(flatten)]
    pub common: Common,

    /// How the output is shown.
    #[command(flatten)]
    pub output: OutputArgs,

    /// `copy` or `rcopy` instead of a command.
    #[command(subcommand)]
    pub action: Option<Action>,

    /// The command to run on every host (after `--`), joined with spaces
    /// into one shell command line as ssh does.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND",
        required = true
    )]
    pub command: Vec<String>,
}

impl Cli {
    /// Parses the process arguments. Options given after `copy`/`rcopy` land
    /// in the subcommand's matches (clap keeps a global option's value where
    /// it was typed), so they are merged into the top-level ones.
    pub fn parse_all() -> Cli {
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Some((_, sub)) = matches.subcommand() {
            let more = Common::from_arg_matches(sub).unwrap_or_else(|e| e.exit());
            cli.common.merge(more, sub);
        }
        cli
    }
}

/// Options that select the hosts and the way to reach them.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Target hosts as a node set (repeatable): `web[01-20],db1`,
    /// `user@host:port`, `^FILE`, `-` for stdin.
    #[arg(short = 'w', long = "hosts", value_name = "NODESET", global = true)]
    pub hosts: Vec<String>,

    /// Hosts to leave out, as a node set (repeatable).
    #[arg(short = 'x', long = "exclude", value_name = "NODESET", global = true)]
    pub exclude: Vec<String>,

    /// How many hosts are worked on at once.
    #[arg(short = 'f', long = "fanout", value_name = "N", default_value_t = 64, global = true)]
    pub fanout: usize,

    /// The login user for hosts that name none.
    #[arg(short = 'l', long = "user", value_name = "USER", global = true)]
    pub user: Option<String>,

    /// A private key file to log in with (repeatable).
    #[arg(short = 'i', long = "identity", value_name = "FILE", global = true)]
    pub identity: Vec<PathBuf>,

    /// An ssh_config directive `Key=Value` or `Key Value` (repeatable), as
    /// with `ssh -o`: any directive ssh_config accepts except Host, Match and
    /// Include. It wins over ~/.ssh/config and /etc/ssh/ssh_config (the
    /// first value obtained wins); -l, -i and -t win over it.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true)]
    pub options: Vec<String>,

    /// Connect timeout in seconds (name lookup, TCP, handshake).
    #[arg(short = 't', long = "connect-timeout", value_name = "SECONDS", global = true)]
    pub connect_timeout: Option<f64>,

    /// Command (or copy) timeout in seconds, per host.
    #[arg(short = 'u', long = "command-timeout", value_name = "SECONDS", global = true)]
    pub command_timeout: Option<f64>,

    /// Exit with the largest remote exit status instead of 0 or 1.
    #[arg(short = 'S', long = "max-status", global = true)]
    pub max_status: bool,

    /// More log output on stderr (repeatable: -v info, -vv debug, -vvv trace);
    /// `RUST_LOG` overrides it.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Work on the hosts in waves of N hosts, or P% of them (rounded down,
    /// at least 1), in node order: a wave starts once every host of the one
    /// before has finished (Ansible's `serial`).
    #[arg(long = "waves", value_name = "N|P%", global = true)]
    pub waves: Option<Amount>,

    /// Start no more hosts once more than N hosts, or P% of them, have
    /// failed; hosts not started by then are reported as such (with -f or
    /// --waves, the ones still waiting). 0: stop at the first failure.
    #[arg(long = "max-failures", value_name = "N|P%", global = true)]
    pub max_failures: Option<Amount>,

    /// N sub-nodes per host, each on its own connection, named HOST:0 ..
    /// HOST:N-1; the command's environment has `SLOT` set to the number.
    #[arg(long = "slots", value_name = "N", global = true)]
    pub slots: Option<usize>,
}

impl Common {
    /// Adds the options typed after the subcommand name (`sub`'s matches).
    fn merge(&mut self, more: Common, sub: &ArgMatches) {
        let typed = |id: &str| sub.value_source(id) == Some(ValueSource::CommandLine);
        self.hosts.extend(more.hosts);
        self.exclude.extend(more.exclude);
        self.identity.extend(more.identity);
        self.options.extend(more.options);
        if typed("fanout") {
            self.fanout = more.fanout;
        }
        self.user = more.user.or(self.user.take());
        self.connect_timeout = more.connect_timeout.or(self.connect_timeout);
        self.command_timeout = more.command_timeout.or(self.command_timeout);
        self.max_status |= more.max_status;
        self.verbose = self.verbose.max(more.verbose);
        self.waves = more.waves.or(self.waves);
        self.max_failures = more.max_failures.or(self.max_failures);
        self.slots = more.slots.or(self.slots);
    }
}

/// Output modes (one at most).
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Gather hosts with identical output and exit status under one folded
    /// node set, after completion (like `clubak -b`, `dshbak -c`).
    #[arg(short = 'b', long = "gather", conflicts_with_all = ["by_host", "json"])]
    pub gather: bool,

    /// Each host's output after completion, hosts in node order.
    #[arg(short = 'L', long = "by-host", conflicts_with = "json")]
    pub by_host: bool,

    /// JSON Lines on stdout: output lines, per-host results, a summary.
    #[arg(long = "json")]
    pub json: bool,

    /// Do not prefix output lines with the host name (live and -L).
    #[arg(short = 'N', long = "no-prefix", conflicts_with_all = ["gather", "json"])]
    pub no_prefix: bool,
}

/// The file-copy forms.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Copy local files to every host: `copy -w HOSTS SRC... DEST`.
    Copy(CopyArgs),
    /// Copy a remote file from every host into a local directory, the host
    /// name appended to each copy's name: `rcopy -w HOSTS REMOTE... LOCALDIR`.
    Rcopy(CopyArgs),
    /// Run the jobs of a queue file, each on the first free host (Pegasus'
    /// queue mode): `queue -w HOSTS QUEUEFILE [--daemon]`; `queue --edit
    /// QUEUEFILE` edits the queue under its lock.
    Queue(QueueArgs),
    /// Run each job of a queue file on every host, the next job once every
    /// host finished this one (Pegasus' broadcast mode): `broadcast -w HOSTS
    /// QUEUEFILE [-e]`.
    Broadcast(BroadcastArgs),
    /// Run a plan file: hosts, steps, joins and jumps written in TOML
    /// (`plan FILE`; `--check` validates it, `--dot` prints its graph).
    Plan(crate::plan::PlanArgs),
}

/// Arguments of `copy` and `rcopy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Copy directories with their contents.
    #[arg(short = 'r', long = "recursive")]
    pub recursive: bool,

    /// Copy with rsync (over each host's own SSH connection) instead of scp.
    #[arg(long = "rsync")]
    pub rsync: bool,

    /// Copy over each host's sftp subsystem instead of scp (for hosts
    /// without an scp binary, or that allow only SFTP).
    #[arg(long = "sftp", conflicts_with = "rsync")]
    pub sftp: bool,

    /// Create the missing directories on the way to the destination (scp
    /// and SFTP; like `mkdir -p`).
    #[arg(long = "create-dirs", conflicts_with = "rsync")]
    pub create_dirs: bool,

    /// The sources, then the destination.
    #[arg(value_name = "PATH", num_args = 2.., required = true)]
    pub paths: Vec<String>,
}

/// Arguments of `queue`.
#[derive(Args, Debug)]
#[command(after_help = crate::jobfile::HELP)]
pub struct QueueArgs {
    /// Keep waiting for jobs when the queue file is empty (stop with Ctrl-C).
    #[arg(long = "daemon", conflicts_with = "edit")]
    pub daemon: bool,

    /// Edit the queue file under its lock instead of running it (Pegasus'
    /// lock mode): a runner takes no job until the editor exits.
    #[arg(long = "edit")]
    pub edit: bool,

    /// The editor for --edit (default: $EDITOR, else vi).
    #[arg(long = "editor", value_name = "COMMAND", requires = "edit")]
    pub editor: Option<String>,

    /// How the output is shown (also accepted before `queue`).
    #[command(flatten)]
    pub output: OutputArgs,

    /// The queue file: one job a line (see below); started jobs are moved to
    /// QUEUEFILE.consumed.
    #[arg(value_name = "QUEUEFILE")]
    pub file: PathBuf,
}

/// Arguments of `broadcast`.
#[derive(Args, Debug)]
#[command(after_help = crate::jobfile::HELP)]
pub struct BroadcastArgs {
    /// Stop at the first job that fails on some host (once every host has
    /// finished that job); the jobs after it stay in the queue file.
    #[arg(short = 'e', long = "error-aborts")]
    pub error_aborts: bool,

    /// How the output is shown (also accepted before `broadcast`).
    #[command(flatten)]
    pub output: OutputArgs,

    /// The queue file: one job a line (see below); started jobs are moved to
    /// QUEUEFILE.consumed.
    #[arg(value_name = "QUEUEFILE")]
    pub file: PathBuf,
}
