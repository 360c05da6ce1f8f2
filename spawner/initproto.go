package spawner

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"syscall"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
)

// InitArg is argv[1] of the silo-init re-exec mode. Programs that start
// silos (silo-proxy, and test binaries) dispatch on it before main runs:
//
//	func init() {
//		if len(os.Args) > 1 && os.Args[1] == spawner.InitArg {
//			runtime.LockOSThread()
//			spawner.InitMain()
//		}
//	}
const InitArg = "silo-init"

// Environment variables announcing silo-init's inherited descriptors. Paths
// and secrets never travel in argv, where every user of the host can read
// them in /proc/<pid>/cmdline.
const (
	// envInitPipe names the read end of the config pipe: the initConfig
	// as one framed JSON message (see writeFrame), then the byte startByte
	// once silo-init is in the silo's cgroup, then, for a postmaster, the
	// byte runByte once it is to start, then nothing until the proxy
	// closes the pipe or dies; that EOF is silo-init's signal to take the
	// whole silo down.
	envInitPipe = "_SILO_INITPIPE"
	// envReportPipe names the write end of the report pipe: JSON lines of
	// initReport, read by the proxy.
	envReportPipe = "_SILO_INITREPORT"
)

// startByte tells silo-init that the proxy has placed it in the silo's
// cgroup, so programs it starts from now on are born inside. Sending the
// config first lets init build the root (and re-execute itself) while the
// proxy waits for the kernel's slow cgroup v1 migration.
const startByte = 'S'

// runByte tells silo-init to start the postmaster. Until it comes, init
// waits with everything else done: root built, privileges dropped, the
// postmaster's exec prepared. A silo whose init waits there is parked (see
// hostLauncher.park): its cold start is this byte and the postmaster's own
// start.
const runByte = 'R'

// writeFrame writes msg with a 4-byte big-endian length before it. The
// config is framed, not newline-terminated, so that silo-init can read
// exactly the message and no byte beyond it: the start byte that follows
// must still be in the pipe when init re-executes itself.
func writeFrame(w io.Writer, msg []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(msg)))
	if _, err := w.Write(append(hdr[:], msg...)); err != nil {
		return err
	}
	return nil
}

// readFrame reads one message written by writeFrame, refusing anything
// longer than limit.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("message of %d bytes exceeds %d", n, limit)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// maxInitMessage bounds one line on either pipe. The config carries the
// mount plan (a few hundred ops for a minimal layout, including the
// generated /etc files); anything near this size is a bug or an attack.
const maxInitMessage = 4 << 20

// initCommand is a program silo-init starts as the silo's postgres user.
type initCommand struct {
	// Step names the command in reports ("initdb", "postmaster").
	Step string   `json:"step"`
	Path string   `json:"path"`
	Args []string `json:"args"` // argv, including argv[0]
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
}

// initConfig is everything silo-init needs, sent by the proxy as one JSON
// line on the config pipe.
type initConfig struct {
	Silo string `json:"silo"`
	// Root is the host directory the silo's root is assembled on
	// (<base_root_dir>/<silo>); it exists before init starts.
	Root     string        `json:"root"`
	Plan     fslayout.Plan `json:"plan"`
	Hostname string        `json:"hostname"`
	// UID and GID are the ids (inside the namespace) the commands run as.
	UID int `json:"uid"`
	GID int `json:"gid"`
	// SetGroups says whether the user namespace allows setgroups(2):
	// true when a privileged proxy wrote the gid map, false in rootless
	// mode, where the kernel requires "deny" before an unprivileged gid
	// map. Children then keep their supplementary groups (NoSetGroups).
	SetGroups bool `json:"set_groups"`
	// Rootless says init holds its capabilities as ambient capabilities
	// of a non-root uid, which it must clear before starting commands.
	Rootless bool               `json:"rootless,omitempty"`
	Seccomp  config.SeccompMode `json:"seccomp,omitempty"`
	// Loopback says init runs in a network namespace of its own
	// (network: none), whose lo it brings up.
	Loopback bool `json:"loopback,omitempty"`
	// Commands run to completion, in order (the bootstrap's initdb).
	Commands []initCommand `json:"commands,omitempty"`
	// Postmaster, when set, is started after Commands and supervised:
	// init stays PID 1 until it exits, and exits with its status.
	Postmaster *initCommand `json:"postmaster,omitempty"`
}

func (c *initConfig) validate() error {
	if c.Silo == "" {
		return errors.New("init config: empty silo name")
	}
	if !path.IsAbs(c.Root) || path.Clean(c.Root) != c.Root || c.Root == "/" {
		return fmt.Errorf("init config: root %q is not a clean absolute path below /", c.Root)
	}
	if c.UID < 0 || c.GID < 0 || c.UID > 65535 || c.GID > 65535 {
		return fmt.Errorf("init config: uid/gid %d/%d out of the mapped range", c.UID, c.GID)
	}
	if len(c.Commands) == 0 && c.Postmaster == nil {
		return errors.New("init config: nothing to run")
	}
	if len(c.Commands) > 0 && c.Postmaster != nil {
		// Commands run in stage 1 under init's own filter; the
		// postmaster in stage 2, where init's filter comes after it.
		return errors.New("init config: commands and a postmaster in one silo-init")
	}
	cmds := c.Commands
	if c.Postmaster != nil {
		cmds = append(cmds[:len(cmds):len(cmds)], *c.Postmaster)
	}
	for _, cmd := range cmds {
		if !path.IsAbs(cmd.Path) || len(cmd.Args) == 0 || cmd.Step == "" {
			return fmt.Errorf("init config: command %q: needs a step name, an absolute path and argv", cmd.Step)
		}
	}
	for i, op := range c.Plan.Ops {
		if !path.IsAbs(op.Target) {
			return fmt.Errorf("init config: plan op %d: target %q is not absolute", i, op.Target)
		}
	}
	return nil
}

// decodeInitConfig parses and validates the config line.
func decodeInitConfig(line []byte) (*initConfig, error) {
	if len(line) > maxInitMessage {
		return nil, fmt.Errorf("init config: %d bytes exceeds %d", len(line), maxInitMessage)
	}
	var c initConfig
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("init config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("init config: trailing data after the JSON object")
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// reportKind is the type of one message from silo-init to the proxy.
type reportKind string

const (
	// reportStarted: the postmaster was started; Pid is its pid inside the
	// silo's pid namespace (2).
	reportStarted reportKind = "started"
	// reportDone: every command ran to completion and there is no
	// postmaster to supervise (bootstrap).
	reportDone reportKind = "done"
	// reportError: a step failed; init exits after sending it.
	reportError reportKind = "error"
	// reportExited: the postmaster exited with Code, or by Signal.
	reportExited reportKind = "exited"
)

// initReport is one JSON line on the report pipe.
type initReport struct {
	Kind    reportKind `json:"kind"`
	Pid     int        `json:"pid,omitempty"`
	Step    string     `json:"step,omitempty"`
	Source  string     `json:"source,omitempty"`
	Target  string     `json:"target,omitempty"`
	Origin  string     `json:"origin,omitempty"`
	Flags   string     `json:"flags,omitempty"`
	Errno   int        `json:"errno,omitempty"`
	Message string     `json:"message,omitempty"`
	Code    int        `json:"code,omitempty"`
	Signal  int        `json:"signal,omitempty"`
}

// maxErrno bounds the errno a report may carry (Linux's MAX_ERRNO).
const maxErrno = 4095

func (r *initReport) validate() error {
	switch r.Kind {
	case reportStarted:
		if r.Pid <= 0 {
			return fmt.Errorf("init report: started without a pid")
		}
	case reportDone:
	case reportError:
		if r.Step == "" {
			return fmt.Errorf("init report: error without a step")
		}
	case reportExited:
		if r.Code < 0 || r.Code > 255 || r.Signal < 0 || r.Signal > 64 {
			return fmt.Errorf("init report: exit code %d / signal %d out of range", r.Code, r.Signal)
		}
	default:
		return fmt.Errorf("init report: unknown kind %q", r.Kind)
	}
	if r.Errno < 0 || r.Errno > maxErrno {
		return fmt.Errorf("init report: errno %d out of range", r.Errno)
	}
	if r.Pid < 0 {
		return fmt.Errorf("init report: negative pid")
	}
	return nil
}

// encodeReport renders r as one line. Encoding a report cannot fail: it
// holds only strings and integers, and json escapes any newline in them.
func encodeReport(r initReport) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic("BUG: encoding an init report: " + err.Error())
	}
	return append(b, '\n')
}

// decodeReport parses and validates one report line (without or with its
// newline). The report pipe is written by a process that runs in the
// silo's namespaces, so the proxy treats what it reads as untrusted input.
func decodeReport(line []byte) (initReport, error) {
	var r initReport
	line = bytes.TrimSuffix(line, []byte{'\n'})
	if len(line) > maxInitMessage {
		return r, fmt.Errorf("init report: %d bytes exceeds %d", len(line), maxInitMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return initReport{}, fmt.Errorf("init report: %w", err)
	}
	if dec.More() {
		return initReport{}, errors.New("init report: trailing data after the JSON object")
	}
	if err := r.validate(); err != nil {
		return initReport{}, err
	}
	return r, nil
}

// InitError is a failure inside silo-init as reported over the report
// pipe: the failing step, the paths it concerned and the errno, so the
// proxy can log `silo sales: bind /srv/x -> /import (config.yaml:14):
// no such file or directory` rather than an exit status.
type InitError struct {
	Step    string // "bind", "proc", "pivot_root", "sethostname", "initdb", ...
	Source  string
	Target  string
	Origin  string // where the failing mount was declared
	Flags   string // mount flags by MS_* name
	Errno   syscall.Errno
	Message string
}

func (e *InitError) Error() string {
	var b strings.Builder
	b.WriteString(e.Step)
	if e.Source != "" {
		b.WriteString(" " + e.Source)
		if e.Target != "" {
			b.WriteString(" ->")
		}
	}
	if e.Target != "" {
		b.WriteString(" " + e.Target)
	}
	var notes []string
	if e.Origin != "" {
		notes = append(notes, e.Origin)
	}
	if e.Flags != "" && e.Flags != "0" {
		notes = append(notes, e.Flags)
	}
	if len(notes) > 0 {
		b.WriteString(" (" + strings.Join(notes, ", ") + ")")
	}
	b.WriteString(": ")
	switch {
	case e.Message != "":
		b.WriteString(e.Message)
	case e.Errno != 0:
		b.WriteString(e.Errno.Error())
	default:
		b.WriteString("failed")
	}
	return b.String()
}

// Unwrap exposes the errno, so errors.Is(err, fs.ErrNotExist) holds for a
// missing bind source.
func (e *InitError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

func (r initReport) initError() *InitError {
	return &InitError{
		Step:    r.Step,
		Source:  r.Source,
		Target:  r.Target,
		Origin:  r.Origin,
		Flags:   r.Flags,
		Errno:   syscall.Errno(r.Errno),
		Message: r.Message,
	}
}

// readLine reads one newline-terminated line of at most limit bytes: the
// framing of the report pipe.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("line exceeds %d bytes", limit)
		}
		if err == nil {
			return line, nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}
