package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// idRange reads the host id range a silo recorded in its idmap file.
func idRange(t testing.TB, cfg *config.Config, silo string) spawner.IDRange {
	t.Helper()
	b, err := os.ReadFile(cfg.Paths(silo).IDMap)
	if err != nil {
		t.Fatalf("idmap of silo %s: %v", silo, err)
	}
	var r spawner.IDRange
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("idmap of silo %s: %v", silo, err)
	}
	return r
}

func fileOwner(t testing.TB, p string) (uid, gid int, mode fs.FileMode) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return int(sys.Uid), int(sys.Gid), st.Mode()
}

// exampleConfig loads the repository's config.example.yaml, pointed at
// this test's state_dir and base_root_dir and at free ports.
func exampleConfig(t *testing.T, e *testEnv) *config.Config {
	t.Helper()
	raw, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for _, r := range []struct{ old, new string }{
		{"address: 127.0.0.1:6432", "address: " + freeAddr(t)},
		{"address: 127.0.0.1:9432", "address: " + freeAddr(t)},
		{"state_dir: ./.silo-state", "state_dir: " + e.StateDir},
		{"base_root_dir: ./.silo-state/roots", "base_root_dir: " + e.RootsDir},
	} {
		if !strings.Contains(text, r.old) {
			t.Fatalf("config.example.yaml no longer contains %q; update this test", r.old)
		}
		text = strings.Replace(text, r.old, r.new, 1)
	}
	p := filepath.Join(e.Dir, "config.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return e.LoadConfig(p)
}

// TestExampleConfigSilos starts the two silos of config.example.yaml and
// checks each is its own postmaster, reachable over its own socket, with
// its own host uids.
func TestExampleConfigSilos(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := exampleConfig(t, e)
	var names []string
	for _, s := range cfg.Silos {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"default", "app"}) {
		t.Fatalf("example silos are %q, want default and app", names)
	}
	m := e.startManager(cfg, nil)
	// The generated superuser passwords exist as soon as the silos are
	// configured, before any start, so an operator can connect with them
	// from the first client on.
	for _, name := range names {
		st, err := os.Stat(cfg.Paths(name).PasswordFile)
		if err != nil {
			t.Fatalf("silo %s: no password file before its first start: %v", name, err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("silo %s: password file mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	before := siloPassword(t, cfg, "app")
	startAll(t, m, "default", "app")
	if after := siloPassword(t, cfg, "app"); after != before {
		t.Errorf("the first start replaced the provisioned password")
	}

	for _, c := range []struct{ silo, db string }{{"default", "postgres"}, {"app", "app"}, {"app", "app_reports"}} {
		if got := psql(t, cfg, c.silo, c.db, "SELECT current_database()"); got != c.db {
			t.Errorf("silo %s: current_database() = %q, want %q", c.silo, got, c.db)
		}
	}
	// postgres_settings of the example reach the postmasters.
	if got := psql(t, cfg, "app", "app", "SHOW max_connections"); got != "110" {
		t.Errorf("max_connections = %q, want the example's 110", got)
	}
	if got := psql(t, cfg, "app", "app", "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want empty (no TCP)", got)
	}
	if got := psql(t, cfg, "default", "postgres", "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NULL"); got != "1" {
		t.Errorf("pg_hba has %s rules, want exactly one", got)
	}
	if got := psql(t, cfg, "default", "postgres", "SELECT type || ' ' || array_to_string(database, ',') || ' ' || array_to_string(user_name, ',') || ' ' || auth_method FROM pg_hba_file_rules"); got != "local all all scram-sha-256" {
		t.Errorf("pg_hba rule = %q", got)
	}

	rd, ra := idRange(t, cfg, "default"), idRange(t, cfg, "app")
	if rd.HostID == ra.HostID || (rd.HostID < ra.HostID+ra.Size && ra.HostID < rd.HostID+rd.Size) {
		t.Fatalf("id ranges overlap: default %+v, app %+v", rd, ra)
	}
	for _, c := range []struct {
		silo string
		r    spawner.IDRange
	}{{"default", rd}, {"app", ra}} {
		paths := cfg.Paths(c.silo)
		want := c.r.HostUID(fslayout.PostgresUID)
		uid, gid, mode := fileOwner(t, paths.Data)
		if uid != want || gid != want || mode.Perm() != 0o700 {
			t.Errorf("silo %s: data dir owned %d:%d mode %v, want %d:%d 0700", c.silo, uid, gid, mode.Perm(), want, want)
		}
		pm := status(t, m, c.silo).Pid
		if got := procUID(t, pm); got != want {
			t.Errorf("silo %s: postmaster %d runs as host uid %d, want %d", c.silo, pm, got, want)
		}
		uid, _, mode = fileOwner(t, paths.PasswordFile)
		if uid != 0 || mode.Perm() != 0o600 {
			t.Errorf("silo %s: password file owned by %d mode %v, want root 0600", c.silo, uid, mode.Perm())
		}
		hba, err := os.ReadFile(filepath.Join(paths.Data, "pg_hba.conf"))
		if err != nil {
			t.Fatal(err)
		}
		var rules []string
		for _, l := range strings.Split(string(hba), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				rules = append(rules, strings.Join(strings.Fields(l), " "))
			}
		}
		if !slices.Equal(rules, []string{"local all all scram-sha-256"}) {
			t.Errorf("silo %s: pg_hba.conf rules %q", c.silo, rules)
		}
	}
	// The app silo's cgroup counts its postmaster and background workers.
	if u, ok := m.Usage("app"); !ok || u.Pids < 5 || u.MemoryBytes == 0 {
		t.Errorf("Usage(app) = %+v, %v; want the silo's processes and memory", u, ok)
	}
	if procUID(t, status(t, m, "default").Pid) == procUID(t, status(t, m, "app").Pid) {
		t.Error("both postmasters run under the same host uid")
	}
	// silo-proxy psql reaches each silo as its superuser, on its first
	// listed database unless told otherwise.
	bin := buildBinary(t)
	for _, c := range []struct {
		silo string
		args []string
		want string
	}{
		{"app", []string{"-Atc", "SELECT current_database() || ' ' || current_user"}, "app postgres"},
		{"app", []string{"-d", "app_reports", "-Atc", "SELECT current_database()"}, "app_reports"},
		{"default", []string{"-Atc", "SELECT current_database()"}, "postgres"},
	} {
		out, err := exec.Command(bin, append([]string{"psql", "--config", cfg.Path, c.silo}, c.args...)...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != c.want {
			t.Errorf("silo-proxy psql %s %q: %v\n%s", c.silo, c.args, err, out)
		}
	}
	// A wrong password is refused: the socket is not trust-authenticated.
	if out, err := psqlErr(cfg, "app", "app", "SELECT 1", "wrong"); err == nil || !strings.Contains(out, "password authentication failed") {
		t.Errorf("psql with a wrong password: %v\n%s", err, out)
	}
}

// planTopLevel returns the names directly below / that the silo's plan
// creates.
func planTopLevel(t testing.TB, cfg *config.Config, silo string, inst fslayout.Install) []string {
	t.Helper()
	s := cfg.Silo(silo)
	paths := cfg.Paths(silo)
	plan, err := fslayout.Build(fslayout.Spec{Silo: silo, Layout: s.Layout, Install: inst, DataDir: paths.Data, SocketDir: paths.Run, Mounts: s.Mounts})
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, op := range plan.Ops {
		first, _, _ := strings.Cut(strings.TrimPrefix(op.Target, "/"), "/")
		set[first] = true
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestStandardSiloIsolation looks at a standard-layout silo from a
// superuser session inside it (COPY ... FROM PROGRAM runs /bin/sh as the
// silo's postgres user) and checks what it can see and do.
func TestStandardSiloIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	roDir := e.MkdirShared("ro-src")
	rwDir := e.MkdirShared("rw-src")
	if err := os.WriteFile(filepath.Join(roDir, "hello.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The silo's postgres user is an unmapped stranger to the host: it
	// writes where others may write.
	if err := os.Chmod(rwDir, 0o777); err != nil {
		t.Fatal(err)
	}
	std := Silo("std", []string{"std"}, func(s *config.Silo) {
		s.Layout = config.LayoutStandard
		s.Mounts = []config.Mount{
			{Source: roDir, Target: "/import", Mode: config.MountRO, Origin: "config.yaml:20"},
			{Source: rwDir, Target: "/export", Mode: config.MountRW, Origin: "config.yaml:21"},
		}
	})
	cfg := e.Config(std, Silo("other", []string{"other"}))
	m := e.startManager(cfg, nil)
	startAll(t, m, "std", "other")
	conn := connectSilo(t, cfg, "std", "std")
	sh := func(script string) []string { return siloShell(t, conn, script) }
	exitOK := func(out []string) bool { return len(out) > 0 && out[len(out)-1] == "exit=0" }

	t.Run("root holds only the plan's targets", func(t *testing.T) {
		out := sh("ls -1A /")
		if !exitOK(out) {
			t.Fatalf("ls /: %q", out)
		}
		got := slices.Clone(out[:len(out)-1])
		sort.Strings(got)
		want := planTopLevel(t, cfg, "std", e.Install)
		if !slices.Equal(got, want) {
			t.Errorf("/ holds %q, want exactly the plan's %q", got, want)
		}
	})
	t.Run("proc shows only the silo", func(t *testing.T) {
		out := sh("for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm 2>/dev/null); done")
		if !exitOK(out) {
			t.Fatalf("listing /proc: %q", out)
		}
		pids := map[int]string{}
		for _, l := range out[:len(out)-1] {
			pidText, comm, _ := strings.Cut(l, " ")
			pid, err := strconv.Atoi(pidText)
			if err != nil {
				t.Fatalf("odd /proc line %q", l)
			}
			pids[pid] = comm
		}
		pm := status(t, m, "std").Pid
		var initComm string
		for _, p := range hostProcs() {
			if p.Pid == pm {
				for _, q := range hostProcs() {
					if q.Pid == p.PPid {
						initComm = q.Comm
					}
				}
			}
		}
		if initComm == "" || pids[1] != initComm {
			t.Errorf("PID 1 is %q, want silo-init (%q on the host)", pids[1], initComm)
		}
		if pids[2] != "postgres" {
			t.Errorf("PID 2 is %q, want the postmaster; the silo sees %q", pids[2], out)
		}
		// Every process the silo sees is in its pid namespace: no more
		// than the host counts there (give or take the shell pipeline
		// that listed them), and far fewer than the host has.
		ns := pidNS(t, pm)
		inNS := 0
		for _, p := range hostProcs() {
			if p.PidNS == ns {
				inNS++
			}
		}
		host := len(hostProcs())
		if len(pids) > inNS+6 || len(pids) >= host {
			t.Errorf("the silo sees %d processes; the host has %d, %d of them in the silo's pid namespace: %v", len(pids), host, inNS, pids)
		}
		for pid, comm := range pids {
			switch comm {
			case initComm, "postgres", "sh", "cat", "":
			default:
				t.Errorf("the silo sees a foreign process %d: %q", pid, comm)
			}
		}
	})
	t.Run("id is the silo user", func(t *testing.T) {
		out := sh("id")
		if !exitOK(out) || !strings.HasPrefix(out[0], "uid=1000(postgres) gid=1000(postgres)") {
			t.Errorf("id = %q", out)
		}
		if strings.Contains(out[0], "groups=") && !strings.HasSuffix(out[0], "groups=1000(postgres)") {
			t.Errorf("supplementary groups leaked into the silo: %q", out[0])
		}
		if out := sh("hostname"); out[0] != "std" {
			t.Errorf("hostname = %q, want the silo name", out)
		}
	})
	t.Run("other silo invisible", func(t *testing.T) {
		other := cfg.Paths("other")
		for _, p := range []string{other.Data, other.Run, other.Dir, e.StateDir, cfg.Paths("std").PasswordFile} {
			out := sh("ls -d " + p)
			if exitOK(out) || !strings.Contains(strings.Join(out, " "), "No such file or directory") {
				t.Errorf("ls -d %s inside the silo: %q, want no such file", p, out)
			}
		}
		out := sh("ls -A /var/lib/postgresql")
		if !exitOK(out) || !slices.Equal(out[:len(out)-1], []string{"data"}) {
			t.Errorf("/var/lib/postgresql holds %q, want only the silo's own data", out)
		}
	})
	t.Run("read-only mount refuses writes", func(t *testing.T) {
		if out := sh("cat /import/hello.txt"); !exitOK(out) || out[0] != "from the host" {
			t.Errorf("reading the ro mount: %q", out)
		}
		for _, p := range []string{"/import/new", "/import/hello.txt", "/usr/new", "/new"} {
			out := sh("echo x > " + p)
			if exitOK(out) || !strings.Contains(strings.Join(out, " "), "Read-only file system") {
				t.Errorf("writing %s: %q, want EROFS", p, out)
			}
		}
		if _, err := os.Stat(filepath.Join(roDir, "new")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a file appeared in the ro source: %v", err)
		}
	})
	t.Run("read-write mount accepts writes", func(t *testing.T) {
		if out := sh("echo from the silo > /export/out.txt && cat /export/out.txt"); !exitOK(out) || out[0] != "from the silo" {
			t.Fatalf("writing the rw mount: %q", out)
		}
		b, err := os.ReadFile(filepath.Join(rwDir, "out.txt"))
		if err != nil || string(b) != "from the silo\n" {
			t.Errorf("host sees %q, %v", b, err)
		}
		uid, _, _ := fileOwner(t, filepath.Join(rwDir, "out.txt"))
		if want := idRange(t, cfg, "std").HostUID(fslayout.PostgresUID); uid != want {
			t.Errorf("file written in the silo is owned by host uid %d, want %d", uid, want)
		}
	})
	t.Run("network holds only lo", func(t *testing.T) {
		// ip(8) when the host has iproute2, else the kernel's own list.
		out := sh("if command -v ip >/dev/null; then ip -o link show | cut -d: -f2; else tail -n +3 /proc/net/dev | cut -d: -f1; fi")
		if !exitOK(out) {
			t.Fatalf("listing interfaces: %q", out)
		}
		var ifaces []string
		for _, l := range out[:len(out)-1] {
			if l = strings.TrimSpace(l); l != "" {
				ifaces = append(ifaces, l)
			}
		}
		if !slices.Equal(ifaces, []string{"lo"}) {
			t.Errorf("interfaces %q, want only lo", ifaces)
		}
	})
	t.Run("lo is up", func(t *testing.T) {
		// A backend's own loopback works: listen on 127.0.0.1 and
		// connect to that listener from the same program. (That the
		// host's loopback stays out of reach is the escape suite's.)
		out := sh(selfLoopbackProbe)
		if !exitOK(out) || !slices.Contains(out, "got ping") {
			t.Errorf("connecting to the silo's own 127.0.0.1: %q", out)
		}
	})
}

// selfLoopbackProbe is a shell command for COPY FROM PROGRAM: perl (part of
// Debian's essential perl-base) listens on 127.0.0.1, connects to itself
// and prints "got ping" when a line made it through.
const selfLoopbackProbe = `perl -MIO::Socket::INET -e '
my $l = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0, Proto => "tcp") or die "listen: $@\n";
my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $l->sockport, Proto => "tcp") or die "connect: $@\n";
my $s = $l->accept or die "accept: $!\n";
print $c "ping\n"; close $c;
print "got ", scalar <$s>;'`

// TestMinimalSilo runs a minimal-layout silo through a database's life:
// tables, a checkpoint, restarts; it has no shell.
func TestMinimalSilo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.Config(Silo("mini", []string{"mini"}))
	m := e.startManager(cfg, nil)
	ctx := context.Background()
	lease, err := m.Acquire(ctx, "mini")
	if err != nil {
		t.Fatal(err)
	}
	if !lease.ColdStart {
		t.Error("first lease is not a cold start")
	}
	conn := connectSilo(t, cfg, "mini", "mini")
	for _, q := range []string{
		"CREATE TABLE t (id int PRIMARY KEY, v text)",
		"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
		"CHECKPOINT",
		"INSERT INTO t VALUES (5001, 'after the checkpoint')",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	_, err = conn.Exec(ctx, "COPY t FROM PROGRAM 'echo 1'")
	// popen() finds no /bin/sh: the server reports either that it could
	// not execute the command or that the child exited with 127.
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !(strings.Contains(pe.Message, "could not execute command") ||
		(strings.Contains(pe.Message, "failed") && strings.Contains(pe.Detail, "127"))) {
		t.Errorf("COPY FROM PROGRAM in a minimal silo = %v, want a program that cannot run (no shell)", err)
	}
	var shellErr string
	if err := conn.QueryRow(ctx, "SELECT (pg_stat_file('/bin/sh')).size").Scan(new(int64)); err != nil {
		shellErr = err.Error()
	}
	if !strings.Contains(shellErr, "No such file or directory") {
		t.Errorf("pg_stat_file('/bin/sh') in a minimal silo: %q, want no such file", shellErr)
	}
	conn.Close(ctx)
	lease.Release()

	if err := m.Restart(ctx, "mini"); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got := psql(t, cfg, "mini", "mini", "SELECT count(*), max(v) FILTER (WHERE id = 5001) FROM t"); got != "5001|after the checkpoint" {
		t.Errorf("after a restart: %q", got)
	}
	if err := m.Stop(ctx, "mini", spawner.StopSmart); err != nil {
		t.Fatal(err)
	}
	lease, err = m.Acquire(ctx, "mini")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	if got := psql(t, cfg, "mini", "mini", "SELECT count(*) FROM t"); got != "5001" {
		t.Errorf("after stop and cold start: %q rows", got)
	}
}

// TestPostmasterKilled: kill -9 of one silo's postmaster; the supervisor
// restarts it, committed rows survive, and a session on the other silo
// never notices.
func TestPostmasterKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.Config(Silo("victim", []string{"victim"}), Silo("bystander", []string{"bystander"}))
	rec := &recorder{}
	m := e.startManager(cfg, rec)
	startAll(t, m, "victim", "bystander")
	ctx := context.Background()

	by := connectSilo(t, cfg, "bystander", "bystander")
	var byPid int
	if err := by.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&byPid); err != nil {
		t.Fatal(err)
	}
	if _, err := by.Exec(ctx, "CREATE TEMP TABLE session_state AS SELECT 42 AS answer"); err != nil {
		t.Fatal(err)
	}
	psql(t, cfg, "victim", "victim", "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")

	before := status(t, m, "victim")
	if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the victim to be restarted", func() bool {
		st := status(t, m, "victim")
		return st.State == spawner.StateRunning && st.Pid != before.Pid && st.Restarts == 1
	})
	if !rec.has("victim exited clean=false") || !rec.has("victim started restart") {
		t.Errorf("observer events %q", rec.events)
	}
	if got := psql(t, cfg, "victim", "victim", "SELECT count(*) FROM t"); got != "1000" {
		t.Errorf("after the crash the table holds %q rows, want 1000", got)
	}
	var pid, answer int
	if err := by.QueryRow(ctx, "SELECT pg_backend_pid(), answer FROM session_state").Scan(&pid, &answer); err != nil {
		t.Fatalf("the bystander's session broke: %v", err)
	}
	if pid != byPid || answer != 42 {
		t.Errorf("bystander session changed: pid %d (was %d), answer %d", pid, byPid, answer)
	}
	if st := status(t, m, "bystander"); st.Restarts != 0 || st.State != spawner.StateRunning {
		t.Errorf("bystander status %+v", st)
	}
}

// TestProxyKilled: kill -9 of the process that started the silos takes
// every silo process with it, and the next start finds the data intact.
func TestProxyKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pc := e.WriteConfig(`
silos:
  - name: one
    databases: [one]
  - name: two
    databases: [two]
`)
	cfg := e.LoadConfig(pc.Path)
	serve, rep := startServe(t, pc.Path)
	namespaces, inits := map[string]bool{}, map[int]bool{}
	for _, st := range rep.Statuses {
		if st.State != spawner.StateRunning || st.Pid == 0 {
			t.Fatalf("serve reported %+v", st)
		}
		namespaces[pidNS(t, st.Pid)] = true
		for _, p := range hostProcs() {
			if p.Pid == st.Pid {
				inits[p.PPid] = true
			}
		}
	}
	if len(inits) != 2 {
		t.Fatalf("found the inits %v of %d silos", inits, len(rep.Statuses))
	}
	psql(t, cfg, "one", "one", "CREATE TABLE kept AS SELECT 'one' AS silo")
	psql(t, cfg, "two", "two", "CREATE TABLE kept AS SELECT 'two' AS silo")
	pgVersion := filepath.Join(cfg.Paths("one").Data, "PG_VERSION")
	stBefore, err := os.Stat(pgVersion)
	if err != nil {
		t.Fatal(err)
	}

	if err := serve.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Host uids are no test here: parallel tests' silos may use the
	// same id blocks. The silos' pid namespaces and their inits are.
	survivors := func() []hostProc {
		var out []hostProc
		for _, p := range hostProcs() {
			if namespaces[p.PidNS] || inits[p.Pid] {
				out = append(out, p)
			}
		}
		return out
	}
	deadline := time.Now().Add(20 * time.Second)
	for left := survivors(); len(left) > 0; left = survivors() {
		if time.Now().After(deadline) {
			t.Fatalf("silo processes survived the proxy: %+v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}

	m := e.startManager(cfg, nil)
	startAll(t, m, "one", "two")
	for _, s := range []string{"one", "two"} {
		if got := psql(t, cfg, s, s, "SELECT silo FROM kept"); got != s {
			t.Errorf("silo %s after the restart: %q", s, got)
		}
	}
	stAfter, err := os.Stat(pgVersion)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(stBefore, stAfter) || !stAfter.ModTime().Equal(stBefore.ModTime()) {
		t.Error("the data directory was initialised again")
	}
}

// TestBadMount: a silo whose bind source is missing fails to start with a
// message naming the mount, the other silos keep running, and nothing is
// left mounted on the host.
func TestBadMount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src := e.MkdirShared("import")
	bad := Silo("bad", []string{"bad"}, func(s *config.Silo) {
		s.Mounts = []config.Mount{{Source: src, Target: "/import", Mode: config.MountRO, Origin: "config.yaml:14"}}
	})
	never := Silo("never", []string{"never"}, func(s *config.Silo) {
		s.Mounts = []config.Mount{{Source: filepath.Join(e.Dir, "missing"), Target: "/data/in", Mode: config.MountRW, Origin: "config.yaml:30"}}
	})
	cfg := e.Config(Silo("good", []string{"good"}), bad, never)
	m := e.startManager(cfg, nil)
	startAll(t, m, "good", "bad")
	ctx := context.Background()
	good := connectSilo(t, cfg, "good", "good")
	if _, err := good.Exec(ctx, "CREATE TEMP TABLE alive AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(ctx, "bad", spawner.StopFast); err != nil {
		t.Fatal(err)
	}
	before := mountinfo(t)

	// The source disappears after the silo's plan was computed: silo-init
	// itself meets the missing source and reports the failing bind.
	if err := os.RemoveAll(src); err != nil {
		t.Fatal(err)
	}
	_, err := m.Acquire(ctx, "bad")
	if !errors.Is(err, spawner.ErrUnavailable) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Acquire(bad) = %v, want ErrUnavailable and ENOENT", err)
	}
	var ie *spawner.InitError
	if !errors.As(err, &ie) || ie.Step != "bind" || ie.Source != src || ie.Target != "/import" || ie.Origin != "config.yaml:14" {
		t.Errorf("error %v is not the init's bind error (%+v)", err, ie)
	}
	want := "bind " + src + " -> /import (config.yaml:14"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("message %q does not name the mount (%q) and the errno", err, want)
	}
	if st := status(t, m, "bad"); st.State != spawner.StateFailed || !strings.Contains(st.LastError, "/import") {
		t.Errorf("bad silo status %+v", st)
	}
	if !strings.Contains(e.Log.String(), "silo=bad") || !strings.Contains(e.Log.String(), want) {
		t.Errorf("the log does not carry the failing mount:\n%s", e.Log.String())
	}

	// A source missing from the start is caught before anything runs.
	_, err = m.Acquire(ctx, "never")
	if !errors.Is(err, spawner.ErrUnavailable) || !strings.Contains(err.Error(), "/data/in") || !strings.Contains(err.Error(), "config.yaml:30") {
		t.Errorf("Acquire(never) = %v, want an error naming the mount", err)
	}

	var x int
	if err := good.QueryRow(ctx, "SELECT x FROM alive").Scan(&x); err != nil || x != 1 {
		t.Errorf("the good silo's session: %d, %v", x, err)
	}
	if st := status(t, m, "good"); st.State != spawner.StateRunning || st.Restarts != 0 {
		t.Errorf("good silo status %+v", st)
	}
	if after := mountinfo(t); after != before {
		t.Errorf("the host's mount table changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestBootstrapRedoneAfterInterruption: a leftover bootstrap directory
// (an initdb killed half-way) is thrown away and redone; the leftover
// never becomes the data directory.
func TestBootstrapRedoneAfterInterruption(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.Config(Silo("fresh", []string{"fresh"}))
	paths := cfg.Paths("fresh")
	partial := paths.Data + ".bootstrap"
	if err := os.MkdirAll(paths.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(partial, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(partial, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := e.startManager(cfg, nil)
	startAll(t, m, "fresh")
	if _, err := os.Stat(partial); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the interrupted bootstrap directory is still there: %v", err)
	}
	if got := psql(t, cfg, "fresh", "fresh", "SELECT count(*) FROM pg_database WHERE datname = 'fresh'"); got != "1" {
		t.Errorf("database fresh: %q", got)
	}
}

// TestDatabasesAddedByReload: databases added to a running silo's list are
// created at once; those added while it is stopped, at its next start.
func TestDatabasesAddedByReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.Config(Silo("grow", []string{"a"}))
	m := e.startManager(cfg, nil)
	startAll(t, m, "grow")
	next := *cfg
	next.Silos = []config.Silo{Silo("grow", []string{"a", "b"})}
	if err := m.Reconfigure(&next); err != nil {
		t.Fatal(err)
	}
	exists := func(db string) bool {
		return psql(t, cfg, "grow", "a", "SELECT count(*) FROM pg_database WHERE datname = '"+db+"'") == "1"
	}
	eventually(t, 30*time.Second, "database b", func() bool { return exists("b") })
	if st := status(t, m, "grow"); st.Restarts != 0 || st.State != spawner.StateRunning {
		t.Errorf("adding a database restarted the silo: %+v", st)
	}
	if err := m.Stop(context.Background(), "grow", spawner.StopFast); err != nil {
		t.Fatal(err)
	}
	third := next
	third.Silos = []config.Silo{Silo("grow", []string{"a", "b", "c"})}
	if err := m.Reconfigure(&third); err != nil {
		t.Fatal(err)
	}
	l, err := m.Acquire(context.Background(), "grow")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if !exists("c") {
		t.Error("database c was not created at the next start")
	}
}
