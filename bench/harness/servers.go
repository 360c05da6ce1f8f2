package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Names of the silos and databases the harness configures.
const (
	benchSilo = "bench" // the measured silo, database bench
	idleSilo  = "idle"  // the second silo of the idle-connection test
	superuser = "postgres"
)

// pgSettings are the postmaster settings of every server the harness runs:
// written into the proxy config's postgres_settings and repeated on the
// plain postmaster's command line, so both run the same data directory
// with the same configuration. 128MB is PostgreSQL's default
// shared_buffers; max_connections leaves room for PgBouncer's idle server
// connections next to 32 active clients of another target.
func pgSettings(maxConnections int) map[string]string {
	return map[string]string{
		"shared_buffers":  "128MB",
		"max_connections": fmt.Sprint(maxConnections),
	}
}

// siloFiles is what the harness reads from the state directory of a silo
// silo-proxy bootstrapped.
type siloFiles struct {
	name     string
	dataDir  string // <state_dir>/silos/<name>/data
	runDir   string // the postmaster's socket directory, as the host sees it
	password string
	uid, gid int // host ids of the silo's postgres user (namespace id 1000)
}

// siloPostgresID is the namespace uid and gid the spawner runs a silo's
// postmaster as (fslayout.PostgresUID); the host id is id_base plus it.
const siloPostgresID = 1000

func readSiloFiles(stateDir, name string) (siloFiles, error) {
	dir := filepath.Join(stateDir, "silos", name)
	sf := siloFiles{name: name, dataDir: filepath.Join(dir, "data"), runDir: filepath.Join(dir, "run")}
	pw, err := os.ReadFile(filepath.Join(dir, "superuser.password"))
	if err != nil {
		return sf, err
	}
	sf.password = strings.TrimSpace(string(pw))
	b, err := os.ReadFile(filepath.Join(dir, "idmap"))
	if err != nil {
		return sf, err
	}
	var idmap struct {
		HostID int `json:"host_id"`
	}
	if err := json.Unmarshal(b, &idmap); err != nil || idmap.HostID == 0 {
		return sf, fmt.Errorf("%s/idmap: cannot read host_id (%v)", dir, err)
	}
	sf.uid, sf.gid = idmap.HostID+siloPostgresID, idmap.HostID+siloPostgresID
	var st syscall.Stat_t
	if err := syscall.Stat(sf.dataDir, &st); err != nil {
		return sf, err
	}
	if int(st.Uid) != sf.uid {
		return sf, fmt.Errorf("%s is owned by uid %d, expected %d from idmap", sf.dataDir, st.Uid, sf.uid)
	}
	return sf, nil
}

// connString is a keyword/value connection string for pgconn. TLS is off
// on every path (pgbench gets PGSSLMODE=disable and PGGSSENCMODE=disable),
// so no path pays a negotiation round trip the others do not.
func connString(host string, port int, db, password string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s password='%s' sslmode=disable",
		host, port, superuser, db, strings.ReplaceAll(password, "'", `\'`))
}

// ping connects, runs SELECT 1 and disconnects.
func ping(ctx context.Context, conn string) error {
	c, err := pgconn.Connect(ctx, conn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "SELECT 1").ReadAll()
	return err
}

// exec runs sql on a fresh connection.
func execSQL(ctx context.Context, conn, sql string) error {
	c, err := pgconn.Connect(ctx, conn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql).ReadAll()
	return err
}

// querySecret returns the superuser's SCRAM secret from pg_authid.
func querySecret(ctx context.Context, conn string) (string, error) {
	c, err := pgconn.Connect(ctx, conn)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	res := c.ExecParams(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", [][]byte{[]byte(superuser)}, nil, nil, nil).Read()
	if res.Err != nil {
		return "", res.Err
	}
	if len(res.Rows) != 1 || !strings.HasPrefix(string(res.Rows[0][0]), "SCRAM-SHA-256$") {
		return "", fmt.Errorf("no SCRAM secret for %s in pg_authid", superuser)
	}
	return string(res.Rows[0][0]), nil
}

// ---- silo-proxy ----

// proxyServer is a `silo-proxy run` process and its admin endpoint.
type proxyServer struct {
	*proc
	port, adminPort int
	config          string
}

type siloConf struct {
	name     string
	database string
}

// writeProxyConfig writes the bench configuration: the minimal layout and
// default seccomp filter (what a user gets), no cgroup limits, no
// idle_timeout (the harness stops silos itself through the admin API).
func writeProxyConfig(path string, port, adminPort int, bindir, stateDir, rootsDir string,
	maxClients int, settings map[string]string, silos []siloConf) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by bench/harness for one run; see bench/README.md.\n")
	fmt.Fprintf(&b, "listen: {address: \"127.0.0.1:%d\"}\n", port)
	fmt.Fprintf(&b, "admin: {address: \"127.0.0.1:%d\"}\n", adminPort)
	fmt.Fprintf(&b, "postgres: {bindir: %q}\n", bindir)
	fmt.Fprintf(&b, "state_dir: %q\nbase_root_dir: %q\n", stateDir, rootsDir)
	fmt.Fprintf(&b, "defaults:\n  layout: minimal\n  seccomp: default\n  max_clients: %d\n  start_timeout: 120s\n  idle_timeout: 0s\n", maxClients)
	fmt.Fprintf(&b, "  postgres_settings:\n")
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "    %s: %q\n", k, settings[k])
	}
	fmt.Fprintf(&b, "silos:\n")
	for _, s := range silos {
		fmt.Fprintf(&b, "  - name: %s\n    databases: [%s]\n", s.name, s.database)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// startProxy runs `silo-proxy run`. With debug, it logs at debug level,
// which adds the spawner's "silo start phases" lines (and a line per
// session, so it is not used while pgbench runs).
func startProxy(bin, config, logPath string, port, adminPort int, env []string, debug bool) (*proxyServer, error) {
	argv := []string{bin, "run", "--config", config, "--shutdown-grace", "5s"}
	if debug {
		argv = append(argv, "--log-level", "debug")
	}
	p, err := start(procSpec{name: "silo-proxy", argv: argv, env: env, log: logPath})
	if err != nil {
		return nil, err
	}
	ps := &proxyServer{proc: p, port: port, adminPort: adminPort, config: config}
	err = waitFor("silo-proxy /readyz", 30*time.Second, 50*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("silo-proxy exited: %v\n%s", p.err, logTail(logPath, 20))
		}
		_, err := ps.admin("GET", "/readyz")
		return err
	})
	if err != nil {
		p.stop(syscall.SIGTERM, 60*time.Second)
		return nil, err
	}
	return ps, nil
}

var adminClient = &http.Client{Timeout: 180 * time.Second}

// admin calls the proxy's admin endpoint and returns the body of a 2xx
// answer.
func (ps *proxyServer) admin(method, path string) ([]byte, error) {
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", ps.adminPort, path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return body, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (ps *proxyServer) siloState(name string) (string, error) {
	body, err := ps.admin("GET", "/silos")
	if err != nil {
		return "", err
	}
	var list []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return "", err
	}
	for _, s := range list {
		if s.Name == name {
			return s.State, nil
		}
	}
	return "", fmt.Errorf("silo %s not listed by /silos", name)
}

// startSilo starts a silo through the admin API and waits until it runs.
func (ps *proxyServer) startSilo(name string) error {
	if _, err := ps.admin("POST", "/silos/"+name+"/start"); err != nil {
		return err
	}
	return ps.waitSilo(name, "running")
}

// stopSilo stops a silo (smart mode: the harness closed every session
// first) and waits until it is stopped.
func (ps *proxyServer) stopSilo(name string) error {
	if _, err := ps.admin("POST", "/silos/"+name+"/stop"); err != nil {
		return err
	}
	return ps.waitSilo(name, "stopped")
}

func (ps *proxyServer) waitSilo(name, want string) error {
	return waitFor("silo "+name+" "+want, 120*time.Second, 5*time.Millisecond, func() error {
		st, err := ps.siloState(name)
		if err != nil {
			return err
		}
		if st != want {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})
}

// ---- plain postmaster ----

// plainServer is the postmaster the harness runs itself on the silo's
// data directory while the silo is stopped: same binary, same data, same
// settings, the same host uid the silo maps its postgres user to, but no
// namespaces, seccomp filter or cgroup, and a TCP listener. Its
// pg_hba.conf (passed as hba_file, so the data directory is left as the
// silo wrote it) asks for the same scram-sha-256 authentication on
// loopback TCP and on its Unix socket.
type plainServer struct {
	*proc
	port    int
	sockDir string
}

func writePlainFiles(dir string, sf siloFiles) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hba := "# Written by bench/harness: the plain postmaster authenticates like the silo.\n" +
		"local all all scram-sha-256\n" +
		"host  all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_hba.conf"), []byte(hba), 0o644); err != nil {
		return err
	}
	return os.Chown(dir, sf.uid, sf.gid)
}

// plainArgs is the plain postmaster's command line: the spawner's own
// (cluster_name, then postgres_settings in name order), with a TCP
// listener and a private socket directory instead of the silo's.
func plainArgs(bindir, dir string, sf siloFiles, port int, settings map[string]string) []string {
	args := []string{filepath.Join(bindir, "postgres"), "-D", sf.dataDir, "-c", "cluster_name=" + sf.name}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	return append(args,
		"-c", "listen_addresses=127.0.0.1",
		"-c", fmt.Sprintf("port=%d", port),
		"-c", "unix_socket_directories="+dir,
		"-c", "hba_file="+filepath.Join(dir, "pg_hba.conf"),
	)
}

func startPlain(bindir, dir string, sf siloFiles, port int, settings map[string]string) (*plainServer, error) {
	p, err := start(plainSpec(bindir, dir, sf, port, settings))
	if err != nil {
		return nil, err
	}
	ps := &plainServer{proc: p, port: port, sockDir: dir}
	conn := connString("127.0.0.1", port, benchSilo, sf.password)
	err = waitFor("plain postmaster", 60*time.Second, 5*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("postmaster exited: %v\n%s", p.err, logTail(filepath.Join(dir, "postgres.log"), 20))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return ping(ctx, conn)
	})
	if err != nil {
		ps.stop()
		return nil, err
	}
	return ps, nil
}

func plainSpec(bindir, dir string, sf siloFiles, port int, settings map[string]string) procSpec {
	return procSpec{
		name: "postgres",
		argv: plainArgs(bindir, dir, sf, port, settings),
		env:  []string{"LC_ALL=C"},
		dir:  dir,
		log:  filepath.Join(dir, "postgres.log"),
		cred: &syscall.Credential{Uid: uint32(sf.uid), Gid: uint32(sf.gid), Groups: []uint32{}},
	}
}

// stop shuts the postmaster down in fast mode (SIGINT) and waits for it.
func (ps *plainServer) stop() { ps.proc.stop(syscall.SIGINT, 60*time.Second) }

// ---- PgBouncer ----

// pgbouncerServer is PgBouncer in session mode in front of one postmaster
// socket. Clients authenticate to it with scram-sha-256 against the
// superuser's SCRAM secret, copied from pg_authid into its auth_file, the
// setup PgBouncer's documentation recommends: it then verifies a client
// without computing the salted password (PBKDF2, as the postmaster
// does), and logs in to the server by passing the client's SCRAM keys on.
// Session mode still pools server
// connections: a client that disconnects leaves its server connection
// open for the next client (after DISCARD ALL), so its -C figure has no
// backend fork in it, unlike direct connections and silo-proxy.
type pgbouncerServer struct {
	*proc
	port int
}

func startPgbouncer(bin, dir string, port int, sockDir string, sockPort int, sf siloFiles, secret string) (*pgbouncerServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ini := fmt.Sprintf(`; Written by bench/harness for one run; see bench/README.md.
[databases]
%[1]s = host=%[2]s port=%[3]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[4]d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %[5]s/userlist.txt
pool_mode = session
max_client_conn = 1000
default_pool_size = 64
server_tls_sslmode = disable
client_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
logfile = %[5]s/pgbouncer.log
pidfile = %[5]s/pgbouncer.pid
`, benchSilo, sockDir, sockPort, port, dir)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o600); err != nil {
		return nil, err
	}
	users := fmt.Sprintf("%q %q\n", superuser, secret)
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(users), 0o600); err != nil {
		return nil, err
	}
	for _, f := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
		if err := os.Chown(f, sf.uid, sf.gid); err != nil {
			return nil, err
		}
	}
	os.Remove(filepath.Join(dir, "pgbouncer.pid"))
	p, err := start(procSpec{
		name: "pgbouncer",
		argv: []string{bin, filepath.Join(dir, "pgbouncer.ini")},
		dir:  dir,
		log:  filepath.Join(dir, "stderr.log"),
		cred: &syscall.Credential{Uid: uint32(sf.uid), Gid: uint32(sf.gid), Groups: []uint32{}},
	})
	if err != nil {
		return nil, err
	}
	pb := &pgbouncerServer{proc: p, port: port}
	conn := connString("127.0.0.1", port, benchSilo, sf.password)
	err = waitFor("pgbouncer", 30*time.Second, 10*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("pgbouncer exited: %v\n%s", p.err, logTail(filepath.Join(dir, "pgbouncer.log"), 20))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return ping(ctx, conn)
	})
	if err != nil {
		pb.stop()
		return nil, err
	}
	return pb, nil
}

// stop shuts PgBouncer down at once (SIGTERM), closing its server
// connections, so the postmaster behind it can stop in smart mode.
func (pb *pgbouncerServer) stop() { pb.proc.stop(syscall.SIGTERM, 30*time.Second) }

// ---- experimental relays ----

// relayServer is one instance of bench/experiments/relay in front of the
// silo's socket.
type relayServer struct {
	*proc
	name string
	port int
}

// relayVariant is an experimental relay configuration: a mode of the
// relay program and its GOMAXPROCS ("" leaves the default).
type relayVariant struct {
	name, mode, gomaxprocs string
}

func parseRelayVariants(s string) ([]relayVariant, error) {
	var out []relayVariant
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mode, procs, _ := strings.Cut(f, "/")
		switch mode {
		case "splice", "rw", "epoll", "epollraw":
		default:
			return nil, fmt.Errorf("relay variant %q: mode must be splice, rw, epoll or epollraw, optionally /GOMAXPROCS", f)
		}
		name := "relay-" + mode
		if procs != "" {
			name += "-p" + procs
		}
		out = append(out, relayVariant{name: name, mode: mode, gomaxprocs: procs})
	}
	return out, nil
}

func startRelay(bin, logDir string, v relayVariant, port int, socket string, conn string) (*relayServer, error) {
	var env []string
	if v.gomaxprocs != "" {
		env = append(env, "GOMAXPROCS="+v.gomaxprocs)
	}
	p, err := start(procSpec{
		name: v.name,
		argv: []string{bin, "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-backend", socket, "-mode", v.mode},
		env:  env,
		log:  filepath.Join(logDir, v.name+".log"),
	})
	if err != nil {
		return nil, err
	}
	rs := &relayServer{proc: p, name: v.name, port: port}
	err = waitFor(v.name, 30*time.Second, 10*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", v.name, p.err, logTail(p.log, 20))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return ping(ctx, conn)
	})
	if err != nil {
		rs.stop()
		return nil, err
	}
	return rs, nil
}

func (rs *relayServer) stop() { rs.proc.stop(syscall.SIGTERM, 10*time.Second) }
