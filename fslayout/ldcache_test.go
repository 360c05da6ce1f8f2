package fslayout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// encodeLDCache writes entries in the glibc-ld.so.cache1.1 format, strings
// after the entry table, offsets from the start of the file.
func encodeLDCache(bo binary.ByteOrder, endian byte, entries []LDCacheEntry) []byte {
	var strs bytes.Buffer
	base := ldCacheHeaderSize + len(entries)*ldCacheEntrySize
	type offs struct{ key, val uint32 }
	var o []offs
	for _, e := range entries {
		k := uint32(base + strs.Len())
		strs.WriteString(e.Name)
		strs.WriteByte(0)
		v := uint32(base + strs.Len())
		strs.WriteString(e.Path)
		strs.WriteByte(0)
		o = append(o, offs{k, v})
	}
	b := make([]byte, base)
	copy(b, ldCacheMagic)
	bo.PutUint32(b[20:], uint32(len(entries)))
	bo.PutUint32(b[24:], uint32(strs.Len()))
	b[28] = endian
	for i, e := range entries {
		off := ldCacheHeaderSize + i*ldCacheEntrySize
		bo.PutUint32(b[off:], uint32(e.Flags))
		bo.PutUint32(b[off+4:], o[i].key)
		bo.PutUint32(b[off+8:], o[i].val)
		bo.PutUint64(b[off+16:], e.HWCap)
	}
	return append(b, strs.Bytes()...)
}

var sampleEntries = []LDCacheEntry{
	{Flags: 0x0303, Name: "libz.so.1", Path: "/lib/x86_64-linux-gnu/libz.so.1"},
	{Flags: 0x0303, Name: "libc.so.6", Path: "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6", HWCap: 1<<62 | 1},
	{Flags: 0x0303, Name: "libc.so.6", Path: "/lib/x86_64-linux-gnu/libc.so.6"},
	{Flags: 0x0003, Name: "libc.so.6", Path: "/lib/i386-linux-gnu/libc.so.6"},
}

func TestParseLDCache(t *testing.T) {
	t.Parallel()
	le := encodeLDCache(binary.LittleEndian, ldCacheEndianLE, sampleEntries)
	be := encodeLDCache(binary.BigEndian, ldCacheEndianBE, sampleEntries)
	native := encodeLDCache(binary.NativeEndian, ldCacheEndianUnset, sampleEntries)
	empty := encodeLDCache(binary.LittleEndian, ldCacheEndianLE, nil)

	badKey := bytes.Clone(le)
	binary.LittleEndian.PutUint32(badKey[ldCacheHeaderSize+4:], uint32(len(le)+10))
	unterminated := le[:len(le)-1]
	hugeCount := bytes.Clone(le)
	binary.LittleEndian.PutUint32(hugeCount[20:], 0xffffffff)
	pastEnd := bytes.Clone(le)
	binary.LittleEndian.PutUint32(pastEnd[20:], 1000)
	badEndian := bytes.Clone(le)
	badEndian[28] = 1
	badMagic := bytes.Clone(le)
	badMagic[0] = 'x'

	tests := []struct {
		name    string
		in      []byte
		want    []LDCacheEntry
		wantErr bool
	}{
		{"little endian", le, sampleEntries, false},
		{"big endian", be, sampleEntries, false},
		{"unset endianness is native", native, sampleEntries, false},
		{"no entries", empty, []LDCacheEntry{}, false},
		{"empty file", nil, nil, true},
		{"short header", le[:40], nil, true},
		{"bad magic", badMagic, nil, true},
		{"old format", append([]byte(ldCacheOldMagic), make([]byte, 64)...), nil, true},
		{"invalid endianness flag", badEndian, nil, true},
		{"key out of bounds", badKey, nil, true},
		{"unterminated string", unterminated, nil, true},
		{"implausible count", hugeCount, nil, true},
		{"table past end", pastEnd, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseLDCache(tt.in)
			if tt.wantErr {
				var fe *CacheFormatError
				if !errors.As(err, &fe) {
					t.Fatalf("err = %v, want *CacheFormatError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Entries, tt.want) {
				t.Fatalf("entries = %+v, want %+v", c.Entries, tt.want)
			}
		})
	}
}

func TestLDCacheLookupKeepsCacheOrder(t *testing.T) {
	t.Parallel()
	c, err := ParseLDCache(encodeLDCache(binary.LittleEndian, ldCacheEndianLE, sampleEntries))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Lookup("libc.so.6")
	if len(got) != 3 || got[0].HWCap == 0 || got[1].Path != "/lib/x86_64-linux-gnu/libc.so.6" || got[2].Flags != 3 {
		t.Fatalf("Lookup(libc.so.6) = %+v", got)
	}
	if got := c.Lookup("libnope.so"); len(got) != 0 {
		t.Fatalf("Lookup(libnope.so) = %+v, want none", got)
	}
	var nilCache *LDCache
	if got := nilCache.Lookup("libc.so.6"); got != nil {
		t.Fatalf("nil cache Lookup = %+v", got)
	}
}

// TestReadLDCacheHost compares the parser with ldconfig's own listing of
// the host cache.
func TestReadLDCacheHost(t *testing.T) {
	t.Parallel()
	c, err := ReadLDCache(hostLDCache)
	if err != nil {
		t.Skipf("host ld.so.cache unreadable: %v", err)
	}
	ldconfig, err := exec.LookPath("ldconfig")
	if err != nil {
		ldconfig = "/sbin/ldconfig"
	}
	out, err := exec.Command(ldconfig, "-p").Output()
	if err != nil {
		t.Skipf("ldconfig -p: %v", err)
	}
	lines := strings.Split(string(out), "\n")
	m := regexp.MustCompile(`^(\d+) libs found`).FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("unexpected ldconfig -p header %q", lines[0])
	}
	n, _ := strconv.Atoi(m[1])
	if len(c.Entries) != n {
		t.Fatalf("parsed %d entries, ldconfig -p lists %d", len(c.Entries), n)
	}
	entry := regexp.MustCompile(`^\s+(\S+) \(.*\) => (\S+)$`)
	for _, l := range lines[1:] {
		m := entry.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		found := false
		for _, e := range c.Lookup(m[1]) {
			found = found || e.Path == m[2]
		}
		if !found {
			t.Errorf("ldconfig lists %s => %s, parser does not", m[1], m[2])
		}
	}
}

func FuzzParseLDCache(f *testing.F) {
	f.Add(encodeLDCache(binary.LittleEndian, ldCacheEndianLE, sampleEntries))
	f.Add(encodeLDCache(binary.BigEndian, ldCacheEndianBE, sampleEntries[:1]))
	f.Add(encodeLDCache(binary.LittleEndian, ldCacheEndianLE, nil))
	f.Add([]byte(ldCacheOldMagic))
	// The host's cache is not a seed: the fuzzer minimises every new
	// input derived from a 30 KiB seed byte by byte, which stalls it.
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseLDCache(b)
		if err != nil {
			if c != nil {
				t.Fatal("cache returned with an error")
			}
			return
		}
		for _, e := range c.Entries {
			if strings.IndexByte(e.Name, 0) >= 0 || strings.IndexByte(e.Path, 0) >= 0 {
				t.Fatalf("entry string holds NUL: %+v", e)
			}
			if len(c.Lookup(e.Name)) == 0 {
				t.Fatalf("entry %q not found by Lookup", e.Name)
			}
		}
		// Re-encoding what was parsed must parse to the same entries.
		again, err := ParseLDCache(encodeLDCache(binary.LittleEndian, ldCacheEndianLE, c.Entries))
		if err != nil {
			t.Fatalf("re-encoded cache: %v", err)
		}
		if len(again.Entries) != len(c.Entries) {
			t.Fatalf("re-encoded cache has %d entries, want %d", len(again.Entries), len(c.Entries))
		}
		for i := range c.Entries {
			if again.Entries[i] != c.Entries[i] {
				t.Fatalf("entry %d: %+v != %+v", i, again.Entries[i], c.Entries[i])
			}
		}
	})
}

func TestParseLDSoConf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want LDSoConf
	}{
		{"dirs and comments", "# libc default configuration\n/usr/local/lib\n\n/lib/x86_64-linux-gnu # multiarch\n",
			LDSoConf{Dirs: []string{"/usr/local/lib", "/lib/x86_64-linux-gnu"}}},
		{"include absolute and relative", "include /etc/ld.so.conf.d/*.conf\ninclude extra/*.conf more.conf\n",
			LDSoConf{Includes: []string{"/etc/ld.so.conf.d/*.conf", "/etc/extra/*.conf", "/etc/more.conf"}}},
		{"separators and type suffix", "/a:/b,/c\t/d=libc6\n",
			LDSoConf{Dirs: []string{"/a", "/b", "/c", "/d"}}},
		{"relative dirs and hwcap ignored", "lib\nhwcap 1 tls\n/x/../y/\n",
			LDSoConf{Dirs: []string{"/y"}}},
		{"crlf", "/opt/lib\r\n", LDSoConf{Dirs: []string{"/opt/lib"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseLDSoConf(strings.NewReader(tt.in), "/etc")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadLDSoConfDirsFollowsIncludes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ld.so.conf", "include conf.d/*.conf\n/top\n")
	write("conf.d/b.conf", "/b\n/top\n")
	write("conf.d/a.conf", "/a\ninclude "+filepath.Join(dir, "ld.so.conf")+"\n")
	got, err := ReadLDSoConfDirs(filepath.Join(dir, "ld.so.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/top", "/a", "/b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dirs = %v, want %v", got, want)
	}
	if _, err := ReadLDSoConfDirs(filepath.Join(dir, "missing.conf")); err == nil {
		t.Fatal("missing top-level file: no error")
	}
}

func FuzzParseLDSoConf(f *testing.F) {
	f.Add("include /etc/ld.so.conf.d/*.conf\n/usr/local/lib\n# c\n/a:/b,/c=x\nhwcap 0 x\n")
	f.Fuzz(func(t *testing.T, in string) {
		conf, err := ParseLDSoConf(strings.NewReader(in), "/etc")
		if err != nil {
			return
		}
		for _, d := range conf.Dirs {
			if !filepath.IsAbs(d) || filepath.Clean(d) != d {
				t.Fatalf("dir %q is not absolute and clean", d)
			}
		}
		for _, p := range conf.Includes {
			if !filepath.IsAbs(p) {
				t.Fatalf("include %q is not absolute", p)
			}
		}
	})
}
