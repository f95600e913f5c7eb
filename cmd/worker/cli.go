package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
)

// command is one operator command: `worker NAME [flags] ARGS`. Each has its
// own flag set, so that `worker NAME -h` lists only its flags.
type command struct {
	name    string // "queues", "task show"
	args    string // its positional arguments, for -h: "QUEUE KIND"
	summary string // one line for `worker -h`
	about   string // more, for `worker NAME -h`
	min     int    // positional arguments, at least
	max     int    // and at most (-1: any)
	// offline commands take no Redis flags and connect to nothing.
	offline bool
	// plain commands print no data, so take no -json.
	plain bool
	// setup adds the command's own flags to e.fs and returns what runs it
	// once they are parsed.
	setup func(e *cliEnv) func(ctx context.Context, args []string) error
}

// commands are the operator commands, in the order `worker -h` lists them.
// Commands of two words (task show) are grouped by their first.
var commands []*command

func init() {
	commands = []*command{
		cmdQueues, cmdTasks, cmdTaskShow, cmdTaskCancel,
		cmdQueuePause, cmdQueueResume, cmdQueueDelete,
		cmdDeadList, cmdDeadRetryAll, cmdDeadPurgeAll, cmdDeadRetry, cmdDeadPurge,
		cmdWorkers, cmdGroups, cmdGroup, cmdRepeats, cmdRepeatsList, cmdRepeatsRemove,
		cmdEnqueue, cmdDashboard, cmdHealthcheck, cmdVersion,
	}
}

// isCommand reports whether word starts an operator command.
func isCommand(word string) bool {
	for _, c := range commands {
		if first, _, _ := strings.Cut(c.name, " "); first == word {
			return true
		}
	}
	return false
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// cliUsage lists the operator commands, for `worker -h`.
func cliUsage() string {
	var b strings.Builder
	b.WriteString("tracing: OTEL_TRACES_EXPORTER=console writes each task's spans to stderr as JSON (none: the default);\n")
	b.WriteString("the OpenTelemetry SDK reads OTEL_SERVICE_NAME and the other standard variables\n\n")
	b.WriteString("operator commands (worker COMMAND -h lists a command's flags; those that use Redis take the -redis flags above):\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  worker %s\t%s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	_ = tw.Flush()
	return b.String()
}

// groupUsage lists the subcommands of a group (worker task, worker dead).
func groupUsage(group string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		if strings.HasPrefix(c.name, group+" ") {
			fmt.Fprintf(tw, "  worker %s\t%s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
		}
	}
	_ = tw.Flush()
	return b.String()
}

// runCLI runs an operator command and returns the exit code: 0, 1 when it
// failed, 2 for a usage error. SIGINT and SIGTERM stop it.
func runCLI(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runCLIContext(ctx, args, nil, stdout, stderr, getenv)
}

// runCLIContext is runCLI on ctx, with stdin for the commands that read it.
func runCLIContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e, err := cli(ctx, args, stdin, stdout, stderr, getenv)
	if e != nil && e.conn != nil {
		err = e.conn.scrub(err)
	}
	// A health check answers 0 or 1 only: Docker reserves 2.
	bad := 2
	if e != nil && e.cmd == cmdHealthcheck {
		bad = 1
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlag):
		return bad // flag printed the error and the usage
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "worker:", err)
		return bad
	}
	fmt.Fprintln(stderr, "worker:", err)
	return 1
}

var (
	errUsage = errors.New("usage")
	errFlag  = errors.New("bad flag")
)

// usageError is a command given wrongly: exit status 2.
type usageError string

func (u usageError) Error() string        { return string(u) }
func (u usageError) Is(target error) bool { return target == errUsage }

func usage(format string, a ...any) error {
	return usageError(fmt.Sprintf(format, a...))
}

// cliEnv is what a command runs with: its flags, output and connection.
type cliEnv struct {
	cmd    *command
	fs     *flag.FlagSet
	conn   *redisConn // nil for offline commands
	json   *bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	rdb redis.UniversalClient
	c   *client.Client
}

// cli parses args into a command and runs it. The env is returned so that
// errors can be scrubbed of the connection's passwords.
func cli(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) (*cliEnv, error) {
	if len(args) == 0 {
		return nil, usage("no command")
	}
	cmd := findCommand(args[0])
	rest := args[1:]
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		if c := findCommand(args[0] + " " + args[1]); c != nil {
			cmd, rest = c, args[2:]
		}
	}
	if cmd == nil {
		if !isCommand(args[0]) {
			return nil, usage("unknown command %q (worker -h lists the commands)", args[0])
		}
		// A group without (or with an unknown) subcommand.
		if len(args) > 1 && (args[1] == "-h" || args[1] == "-help" || args[1] == "--help") {
			fmt.Fprintf(stderr, "usage:\n%s", groupUsage(args[0]))
			return nil, flag.ErrHelp
		}
		if len(args) > 1 {
			return nil, usage("unknown command %q; worker %s takes one of:\n%s", args[0]+" "+args[1], args[0], strings.TrimRight(groupUsage(args[0]), "\n"))
		}
		return nil, usage("worker %s needs a subcommand:\n%s", args[0], strings.TrimRight(groupUsage(args[0]), "\n"))
	}
	fs := flag.NewFlagSet("worker "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &cliEnv{cmd: cmd, fs: fs, stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	if !cmd.offline {
		e.conn = redisFlags(fs, getenv)
	}
	e.json = new(bool)
	if !cmd.plain {
		e.json = fs.Bool("json", false, "print JSON (snake_case keys)")
	}
	run := cmd.setup(e)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: worker %s\n\n%s\n", strings.TrimSpace(cmd.name+" [flags] "+cmd.args), cmd.summary)
		if cmd.about != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.about))
		}
		fmt.Fprint(w, "\nflags:\n")
		fs.PrintDefaults()
	}
	// Flags may come after the arguments too ("task show ID -json").
	var pos []string
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return e, err
			}
			return e, errFlag
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	if len(pos) < cmd.min || (cmd.max >= 0 && len(pos) > cmd.max) {
		want := "no arguments"
		if cmd.args != "" {
			want = cmd.args
		}
		return e, usage("worker %s takes %s, got %d argument(s) (worker %s -h)", cmd.name, want, len(pos), cmd.name)
	}
	if e.conn != nil {
		if _, err := e.conn.options(); err != nil {
			return e, usage("%v", err)
		}
	}
	defer e.close()
	return e, run(ctx, pos)
}

// redis returns the connection, made on first use.
func (e *cliEnv) redis() (redis.UniversalClient, error) {
	if e.rdb == nil {
		rdb, err := e.conn.client()
		if err != nil {
			return nil, err
		}
		e.rdb = rdb
	}
	return e.rdb, nil
}

// inspector returns an inspector on the connection.
func (e *cliEnv) inspector() (*inspect.Inspector, error) {
	rdb, err := e.redis()
	if err != nil {
		return nil, err
	}
	return inspect.New(rdb), nil
}

// client returns a client on the connection, made on first use (it checks
// the server).
func (e *cliEnv) client(ctx context.Context) (*client.Client, error) {
	if e.c != nil {
		return e.c, nil
	}
	rdb, err := e.redis()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The client's warnings about the server's setup go to stderr.
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := client.New(ctx, rdb, &client.Config{Logger: log})
	if err != nil {
		return nil, err
	}
	e.c = c
	return c, nil
}

func (e *cliEnv) close() {
	if e.c != nil {
		_ = e.c.Close()
	}
	if e.rdb != nil {
		_ = e.rdb.Close()
	}
}

// callTimeout bounds each read or write of a command.
const callTimeout = 30 * time.Second

// emit prints v as JSON with -json, else calls text on a tab writer.
func (e *cliEnv) emit(v any, text func(w io.Writer)) error {
	if *e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

// checkState checks a -state flag before anything connects.
func checkState(s string, allowed ...inspect.State) (inspect.State, error) {
	for _, a := range allowed {
		if inspect.State(s) == a {
			return a, nil
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	if s == "" {
		return "", usage("-state is required: one of %s", strings.Join(names, ", "))
	}
	return "", usage("-state %q: want one of %s", s, strings.Join(names, ", "))
}

var listStates = []inspect.State{inspect.StateWaiting, inspect.StateRunning, inspect.StateScheduled,
	inspect.StateRetrying, inspect.StateHeld, inspect.StateDead}

// fmtTime prints a time for a table: UTC to the second, "-" when zero.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtDue prints a due time with how far it is from now.
func fmtDue(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Until(t).Round(time.Second)
	if d >= 0 {
		return fmt.Sprintf("%s (in %s)", fmtTime(t), d)
	}
	return fmt.Sprintf("%s (%s ago)", fmtTime(t), -d)
}

// oneLine shortens s to n runes on one line, for tables.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	if s == "" {
		return "-"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
