package config

import (
	"strings"
	"testing"
)

// oneSilo is a minimal valid silos: section appended to cases that test
// something else.
const oneSilo = `
silos:
  - name: app
    databases: [app]
`

// TestValidationRules holds, for every rule of DESIGN.md §2 and the config
// part of issue 2, a config that breaks it (the offending line carries a
// "#<" marker; the problem must name that line and key) and a config that
// is the nearest valid variant.
func TestValidationRules(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		bad  string
		key  string
		msg  string
		good string
	}{
		{
			name: "unknown top-level key",
			bad:  "state_dri: /x #<\n" + oneSilo,
			key:  "state_dri", msg: `did you mean "state_dir"`,
			good: "state_dir: /x\n" + oneSilo,
		},
		{
			name: "unknown nested key",
			bad: `silos:
  - name: app
    databases: [app]
    limits:
      memroy: 1GiB #<
`,
			key: "silos[0].limits.memroy", msg: `did you mean "memory"`,
			good: `silos:
  - name: app
    databases: [app]
    limits:
      memory: 1GiB
`,
		},
		{
			name: "unknown key inside a mount",
			bad: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /src, readonly: true} #<
` + oneSilo,
			key: "defaults.mounts[0].readonly", msg: "unknown key",
			good: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /src, mode: ro}
` + oneSilo,
		},
		{
			name: "duplicate key",
			bad:  "state_dir: /a\nstate_dir: /b #<\n" + oneSilo,
			key:  "state_dir", msg: "duplicate key; first given at line 1",
			good: "state_dir: /a\nbase_root_dir: /b\n" + oneSilo,
		},
		{
			name: "relative mount source",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - source: src #<
        target: /src
`,
			key: "silos[0].mounts[0].source", msg: `"src" is a relative path`,
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - source: {{dir}}/src
        target: /src
`,
		},
		{
			name: "relative mount target",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - source: {{dir}}/src
        target: srv/data #<
`,
			key: "silos[0].mounts[0].target", msg: `"srv/data" is a relative path`,
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - source: {{dir}}/src
        target: /srv/data
`,
		},
		{
			name: "relative target escaping the root",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: ../etc} #<
`,
			key: "silos[0].mounts[0].target", msg: `"../etc" escapes the silo root`,
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /srv/../etc}
`,
		},
		{
			name: "absolute target escaping the root",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /srv/../../etc} #<
`,
			key: "silos[0].mounts[0].target", msg: "escapes the silo root",
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /srv/./data/}
`,
		},
		{
			name: "target is the root",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /.} #<
`,
			key: "silos[0].mounts[0].target", msg: "is the silo root itself",
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /srv}
`,
		},
		{
			name: "target below /proc",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /proc/sys} #<
`,
			key: "silos[0].mounts[0].target", msg: "collides with reserved path /proc",
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /procfs}
`,
		},
		{
			name: "target below /dev",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /dev/shm} #<
`,
			key: "silos[0].mounts[0].target", msg: "collides with reserved path /dev",
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /devices}
`,
		},
		{
			name: "target is the socket directory",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /run/postgresql} #<
`,
			key: "silos[0].mounts[0].target", msg: "collides with reserved path /run/postgresql",
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /run/other}
`,
		},
		{
			name: "target inside the data directory",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /var/lib/postgresql/data/pg_wal} #<
`,
			key: "silos[0].mounts[0].target", msg: "collides with reserved path /var/lib/postgresql/data",
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /var/lib/postgresql/archive}
`,
		},
		{
			name: "target is the generated passwd",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/file, target: /etc/passwd} #<
`,
			key: "silos[0].mounts[0].target", msg: "collides with reserved path /etc/passwd",
			good: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/file, target: /etc/app.conf}
`,
		},
		{
			name: "missing mount source",
			bad: `defaults:
  mounts:
    - {source: {{dir}}/nope, target: /nope} #<
` + oneSilo,
			key: "defaults.mounts[0].source", msg: "does not exist",
			good: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /nope}
` + oneSilo,
		},
		{
			name: "mount source is a named pipe",
			bad: `defaults:
  mounts:
    - {source: {{dir}}/fifo, target: /fifo} #<
` + oneSilo,
			key: "defaults.mounts[0].source", msg: "is a named pipe; only directories, regular files and devices",
			good: `defaults:
  mounts:
    - {source: {{dir}}/file, target: /file}
    - {source: /dev/null, target: /null}
` + oneSilo,
		},
		{
			name: "mount source inside state_dir",
			bad: `state_dir: src
defaults:
  mounts:
    - {source: {{dir}}/src, target: /state} #<
` + oneSilo,
			key: "defaults.mounts[0].source", msg: "is inside state_dir",
			good: `state_dir: state
defaults:
  mounts:
    - {source: {{dir}}/src, target: /state}
` + oneSilo,
		},
		{
			name: "mount source containing state_dir",
			bad: `state_dir: src/state
defaults:
  mounts:
    - {source: {{dir}}, target: /all} #<
` + oneSilo,
			key: "defaults.mounts[0].source", msg: "contains state_dir",
			good: `state_dir: src/state
defaults:
  mounts:
    - {source: {{dir}}/file, target: /all}
` + oneSilo,
		},
		{
			name: "mount source missing from entry",
			bad: `defaults:
  mounts:
    - {target: /x} #<
` + oneSilo,
			key: "defaults.mounts[0].source", msg: "required",
			good: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /x}
` + oneSilo,
		},
		{
			name: "mount mode",
			bad: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /x, mode: rx} #<
` + oneSilo,
			key: "defaults.mounts[0].mode", msg: `"rx" is not ro or rw`,
			good: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /x, mode: rw}
` + oneSilo,
		},
		{
			name: "duplicate silo names",
			bad: `silos:
  - name: app
    databases: [app]
  - name: app #<
    databases: [other]
`,
			key: "silos[1].name", msg: `silo "app" is already declared at`,
			good: `silos:
  - name: app
    databases: [app]
  - name: other
    databases: [other]
`,
		},
		{
			name: "silo name with upper case",
			bad: `silos:
  - name: Sales #<
    databases: [Sales]
`,
			key: "silos[0].name", msg: "becomes a directory name",
			good: `silos:
  - name: sales
    databases: [Sales]
`,
		},
		{
			name: "silo name with a slash",
			bad: `silos:
  - name: a/../b #<
    databases: [app]
`,
			key: "silos[0].name", msg: "is not a valid silo name",
			good: `silos:
  - name: a-b_1
    databases: [app]
`,
		},
		{
			name: "silo name too long",
			bad: `silos:
  - name: ` + strings.Repeat("a", 64) + ` #<
    databases: [app]
`,
			key: "silos[0].name", msg: "is not a valid silo name",
			good: `silos:
  - name: ` + strings.Repeat("a", 63) + `
    databases: [app]
`,
		},
		{
			name: "silo without name",
			bad: `silos:
  - databases: [app] #<
`,
			key: "silos[0].name", msg: "required",
			good: `silos:
  - databases: [app]
    name: app
`,
		},
		{
			name: "database in two silos",
			bad: `silos:
  - name: app
    databases: [app, shared]
  - name: other
    databases: [other, shared] #<
`,
			key: "silos[1].databases[1]", msg: `database "shared" is already served by silo "app" at`,
			good: `silos:
  - name: app
    databases: [app, shared]
  - name: other
    databases: [other]
`,
		},
		{
			name: "database twice in one silo",
			bad: `silos:
  - name: app
    databases:
      - app
      - app #<
`,
			key: "silos[0].databases[1]", msg: "listed twice in this silo (first at line 4)",
			good: `silos:
  - name: app
    databases:
      - app
      - App
`,
		},
		{
			name: "database name longer than NAMEDATALEN-1",
			bad: `silos:
  - name: app
    databases: [` + strings.Repeat("d", 64) + `] #<
`,
			key: "silos[0].databases[0]", msg: "NAMEDATALEN",
			good: `silos:
  - name: app
    databases: [` + strings.Repeat("d", 63) + `]
`,
		},
		{
			name: "two catch-alls",
			bad: `silos:
  - name: default
    databases: ["*"]
  - name: other
    databases: ["*"] #<
`,
			key: "silos[1].databases[0]", msg: "second catch-all",
			good: `silos:
  - name: default
    databases: ["*"]
  - name: other
    databases: [other]
`,
		},
		{
			name: "catch-all mixed with names is allowed, twice is not",
			bad: `silos:
  - name: default
    databases: ["*", app, "*"] #<
`,
			key: "silos[0].databases[2]", msg: "listed twice",
			good: `silos:
  - name: default
    databases: ["*", app]
`,
		},
		{
			name: "empty databases",
			bad: `silos:
  - name: app
    databases: [] #<
`,
			key: "silos[0].databases", msg: "empty",
			good: `silos:
  - name: app
    databases: [app]
`,
		},
		{
			name: "databases not a list",
			bad: `silos:
  - name: app
    databases: app #<
`,
			key: "silos[0].databases", msg: "must be a list",
			good: `silos:
  - name: app
    databases: [app]
`,
		},
		{
			name: "layout enum",
			bad:  "defaults:\n  layout: fat #<\n" + oneSilo,
			key:  "defaults.layout", msg: `"fat" is not one of minimal, standard, empty`,
			good: "defaults:\n  layout: standard\n" + oneSilo,
		},
		{
			name: "network enum",
			bad:  "defaults:\n  network: bridge #<\n" + oneSilo,
			key:  "defaults.network", msg: `"bridge" is not one of none, host`,
			good: "defaults:\n  network: host\n" + oneSilo,
		},
		{
			name: "seccomp enum",
			bad:  oneSilo + "    seccomp: strict #<\n",
			key:  "silos[0].seccomp", msg: `"strict" is not one of default, log, off`,
			good: oneSilo + "    seccomp: log\n",
		},
		{
			name: "tls mode enum",
			bad:  "tls:\n  mode: prefer #<\n" + oneSilo,
			key:  "tls.mode", msg: `"prefer" is not one of disable, allow, require`,
			good: "tls:\n  mode: disable\n" + oneSilo,
		},
		{
			name: "tls require without key file",
			bad:  "tls:\n  mode: require #<\n  cert_file: {{dir}}/cert.pem\n" + oneSilo,
			key:  "tls.key_file", msg: "required when tls.mode is require",
			good: "tls:\n  mode: require\n  cert_file: {{dir}}/cert.pem\n  key_file: {{dir}}/key.pem\n" + oneSilo,
		},
		{
			name: "tls allow with missing cert file",
			bad:  "tls:\n  mode: allow\n  cert_file: {{dir}}/nope.pem #<\n  key_file: key.pem\n" + oneSilo,
			key:  "tls.cert_file", msg: "does not exist",
			good: "tls:\n  mode: allow\n  cert_file: cert.pem\n  key_file: key.pem\n" + oneSilo,
		},
		{
			name: "memory size garbage",
			bad:  "defaults:\n  limits: {memory: lots} #<\n" + oneSilo,
			key:  "defaults.limits.memory", msg: "is not a number",
			good: "defaults:\n  limits: {memory: 1.5GiB}\n" + oneSilo,
		},
		{
			name: "memory size unknown unit",
			bad:  "defaults:\n  limits: {memory: 12XB} #<\n" + oneSilo,
			key:  "defaults.limits.memory", msg: "unknown unit",
			good: "defaults:\n  limits: {memory: 12MB}\n" + oneSilo,
		},
		{
			name: "memory size negative",
			bad:  "defaults:\n  limits: {memory: -1GiB} #<\n" + oneSilo,
			key:  "defaults.limits.memory", msg: "negative",
			good: "defaults:\n  limits: {memory: 1073741824}\n" + oneSilo,
		},
		{
			name: "memory size overflow",
			bad:  "defaults:\n  limits: {memory: 9000000TiB} #<\n" + oneSilo,
			key:  "defaults.limits.memory", msg: "does not fit in 64 bits",
			good: "defaults:\n  limits: {memory: 8000TiB}\n" + oneSilo,
		},
		{
			name: "start_timeout unparsable",
			bad:  "defaults:\n  start_timeout: soon #<\n" + oneSilo,
			key:  "defaults.start_timeout", msg: "is not a duration",
			good: "defaults:\n  start_timeout: 1m30s\n" + oneSilo,
		},
		{
			name: "start_timeout without unit",
			bad:  "defaults:\n  start_timeout: 30 #<\n" + oneSilo,
			key:  "defaults.start_timeout", msg: "has no unit",
			good: "defaults:\n  start_timeout: 30s\n" + oneSilo,
		},
		{
			name: "start_timeout zero",
			bad:  "defaults:\n  start_timeout: 0s #<\n" + oneSilo,
			key:  "defaults.start_timeout", msg: "greater than 0",
			good: "defaults:\n  start_timeout: 1ms\n" + oneSilo,
		},
		{
			name: "idle_timeout negative",
			bad:  oneSilo + "    idle_timeout: -5m #<\n",
			key:  "silos[0].idle_timeout", msg: "negative",
			good: oneSilo + "    idle_timeout: 0s\n",
		},
		{
			name: "cpu zero",
			bad:  "defaults:\n  limits: {cpu: \"0\"} #<\n" + oneSilo,
			key:  "defaults.limits.cpu", msg: "zero",
			good: "defaults:\n  limits: {cpu: \"0.5\"}\n" + oneSilo,
		},
		{
			name: "cpu negative",
			bad:  "defaults:\n  limits: {cpu: -2} #<\n" + oneSilo,
			key:  "defaults.limits.cpu", msg: "negative",
			good: "defaults:\n  limits: {cpu: 2}\n" + oneSilo,
		},
		{
			name: "cpu garbage",
			bad:  "defaults:\n  limits: {cpu: half} #<\n" + oneSilo,
			key:  "defaults.limits.cpu", msg: "not a decimal number of CPUs",
			good: "defaults:\n  limits: {cpu: \"\"}\n" + oneSilo,
		},
		{
			name: "pids negative",
			bad:  oneSilo + "    limits: {pids: -1} #<\n",
			key:  "silos[0].limits.pids", msg: "negative",
			good: oneSilo + "    limits: {pids: 0}\n",
		},
		{
			name: "pids not an integer",
			bad:  oneSilo + "    limits: {pids: \"200\"} #<\n",
			key:  "silos[0].limits.pids", msg: "must be an integer",
			good: oneSilo + "    limits: {pids: 200}\n",
		},
		{
			name: "max_clients below 1",
			bad:  oneSilo + "    max_clients: 0 #<\n",
			key:  "silos[0].max_clients", msg: "at least 1 client",
			good: oneSilo + "    max_clients: 1\n",
		},
		{
			name: "listen address without port",
			bad:  "listen:\n  address: localhost #<\n" + oneSilo,
			key:  "listen.address", msg: "is not host:port",
			good: "listen:\n  address: localhost:5432\n" + oneSilo,
		},
		{
			name: "admin address with bad port",
			bad:  "admin:\n  address: \"[::1]:http\" #<\n" + oneSilo,
			key:  "admin.address", msg: "is not a number from 0 to 65535",
			good: "admin:\n  address: \"[::1]:8080\"\n" + oneSilo,
		},
		{
			name: "duplicate mount target within a silo",
			bad: `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /data}
      - {source: {{dir}}/file, target: /data/} #<
`,
			key: "silos[0].mounts[1].target", msg: `target "/data" is already mounted by silos[0].mounts[0]`,
			good: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /data}
silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/file, target: /data/}
`,
		},
		{
			name: "duplicate mount target within defaults",
			bad: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /data}
    - {source: {{dir}}/src, target: /data} #<
` + oneSilo,
			key: "defaults.mounts[1].target", msg: "is already mounted by defaults.mounts[0]",
			good: `defaults:
  mounts:
    - {source: {{dir}}/src, target: /data}
    - {source: {{dir}}/src, target: /data2}
` + oneSilo,
		},
		{
			name: "postgres setting name",
			bad:  "defaults:\n  postgres_settings:\n    work-mem: 4MB #<\n" + oneSilo,
			key:  "defaults.postgres_settings.work-mem", msg: "not a configuration parameter name",
			good: "defaults:\n  postgres_settings:\n    work_mem: 4MB\n    pg_stat_statements.max: 1000\n" + oneSilo,
		},
		{
			name: "postgres setting owned by the proxy",
			bad:  oneSilo + "    postgres_settings:\n      Listen_Addresses: '*' #<\n",
			key:  "silos[0].postgres_settings.Listen_Addresses", msg: "owned by silo-proxy",
			good: oneSilo + "    postgres_settings:\n      log_connections: on\n",
		},
		{
			name: "postgres setting given twice in two spellings",
			bad:  oneSilo + "    postgres_settings:\n      work_mem: 4MB\n      WORK_MEM: 8MB #<\n",
			key:  "silos[0].postgres_settings.WORK_MEM", msg: "case-insensitive",
			good: oneSilo + "    postgres_settings:\n      work_mem: 4MB\n      maintenance_work_mem: 8MB\n",
		},
		{
			name: "postgres setting without value",
			bad:  oneSilo + "    postgres_settings:\n      search_path: #<\n",
			key:  "silos[0].postgres_settings.search_path", msg: "must be a value",
			good: oneSilo + "    postgres_settings:\n      search_path: ''\n",
		},
		{
			name: "no silos",
			bad:  "state_dir: /x\nsilos: [] #<\n",
			key:  "silos", msg: "nothing to route",
			good: "state_dir: /x\n" + oneSilo,
		},
		{
			name: "superuser_password_file missing",
			bad:  oneSilo + "    superuser_password_file: secrets/pw #<\n",
			key:  "silos[0].superuser_password_file", msg: "does not exist",
			good: oneSilo + "    superuser_password_file: password\n",
		},
		{
			name: "bindir relative",
			bad:  "postgres:\n  bindir: bin #<\n" + oneSilo,
			key:  "postgres.bindir", msg: `must be "auto" or an absolute directory`,
			good: "postgres:\n  bindir: {{dir}}/src\n" + oneSilo,
		},
		{
			name: "bindir missing",
			bad:  "postgres:\n  bindir: {{dir}}/nope #<\n" + oneSilo,
			key:  "postgres.bindir", msg: "does not exist",
			good: "postgres:\n  bindir: auto\n" + oneSilo,
		},
		{
			name: "whitelist_file missing",
			bad:  oneSilo + "    whitelist_file: nope.wl #<\n",
			key:  "silos[0].whitelist_file", msg: "cannot read whitelist",
			good: oneSilo + "    whitelist_file: wl\n",
		},
		{
			name: "custom_fs_layout missing",
			bad:  "custom_fs_layout: nope.layout #<\n" + oneSilo,
			key:  "custom_fs_layout", msg: "cannot read custom_fs_layout",
			good: "custom_fs_layout: \"\"\n" + oneSilo,
		},
		{
			name: "wrong type for a string",
			bad:  "state_dir: [a, b] #<\n" + oneSilo,
			key:  "state_dir", msg: "must be a string, not a list",
			good: "state_dir: ab\n" + oneSilo,
		},
		{
			name: "merge key",
			bad:  "defaults: &d\n  layout: empty\nsilos:\n  - name: app\n    databases: [app]\n    <<: *d #<\n",
			key:  "silos[0].<<", msg: "merge keys are not supported",
			good: "defaults: &d\n  layout: empty\nsilos:\n  - name: app\n    databases: [app]\n    limits: {}\n",
		},
		{
			name: "YAML syntax error",
			bad:  "silos:\n  - name: app\n    databases: [app #<\n  - name: x\n",
			key:  "", msg: "invalid YAML",
			good: "silos:\n  - name: app\n    databases: [app]\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			_, err := f.load(t, tc.bad)
			wantProblem(t, err, "config.yaml", markedLine(t, tc.bad), tc.key, tc.msg)
			f.mustLoad(t, tc.good)
		})
	}
}
