package fslayout

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Layout of glibc's ld.so.cache in the format ldconfig writes since glibc
// 2.32 (elf/cache.c, sysdeps/generic/dl-cache.h: struct cache_file_new and
// struct file_entry_new). String offsets are relative to the start of the
// file.
const (
	ldCacheMagic = "glibc-ld.so.cache1.1" // CACHEMAGIC_VERSION_NEW
	// ldCacheOldMagic is the libc5-era format ("ld.so-1.7.0"), which glibc
	// stopped writing in 2.32; it is reported as unsupported so the
	// resolver falls back to the ld.so.conf directories.
	ldCacheOldMagic   = "ld.so-1.7.0"
	ldCacheHeaderSize = 48 // magic+version 20, nlibs 4, len_strings 4, flags 1+3, extension_offset 4, unused 12
	ldCacheEntrySize  = 24 // flags 4, key 4, value 4, osversion 4, hwcap 8
	// ldCacheMaxEntries bounds nlibs before anything is allocated; a real
	// cache holds a few thousand.
	ldCacheMaxEntries = 1 << 20
)

// Values of cache_file_new.flags (dl-cache.h cache_file_new_flags_endian_*).
const (
	ldCacheEndianUnset = 0
	ldCacheEndianLE    = 2
	ldCacheEndianBE    = 3
)

// LDCacheEntry is one library of ld.so.cache.
type LDCacheEntry struct {
	// Flags is the entry's type and ABI word (FLAG_ELF_LIBC6 | FLAG_X8664_LIB64
	// and so on). The resolver does not trust it for the ABI: it checks the
	// ELF header of the file itself, as the loader finally does.
	Flags int32
	// Name is the soname the entry is looked up by ("libc.so.6").
	Name string
	// Path is the file the loader opens for it.
	Path string
	// HWCap is non-zero for a variant that the loader picks only on CPUs
	// with the given capabilities (glibc-hwcaps subdirectories).
	HWCap uint64
}

// LDCache is a parsed /etc/ld.so.cache.
type LDCache struct {
	Entries []LDCacheEntry
	byName  map[string][]int
}

// ParseLDCache parses the "glibc-ld.so.cache1.1" format. Every offset is
// checked against the buffer, so a corrupt or hostile file yields a
// *CacheFormatError, never a panic or a huge allocation.
func ParseLDCache(b []byte) (*LDCache, error) {
	if bytes.HasPrefix(b, []byte(ldCacheOldMagic)) {
		return nil, &CacheFormatError{Offset: 0, Reason: "old ld.so-1.7.0 format is not supported"}
	}
	if len(b) < ldCacheHeaderSize {
		return nil, &CacheFormatError{Offset: len(b), Reason: "shorter than the cache header"}
	}
	if string(b[:len(ldCacheMagic)]) != ldCacheMagic {
		return nil, &CacheFormatError{Offset: 0, Reason: "bad magic, want " + ldCacheMagic}
	}
	var bo binary.ByteOrder
	switch b[28] {
	case ldCacheEndianLE:
		bo = binary.LittleEndian
	case ldCacheEndianBE:
		bo = binary.BigEndian
	case ldCacheEndianUnset:
		bo = binary.NativeEndian
	default:
		return nil, &CacheFormatError{Offset: 28, Reason: "invalid endianness flag"}
	}
	nlibs := uint64(bo.Uint32(b[20:24]))
	if nlibs > ldCacheMaxEntries {
		return nil, &CacheFormatError{Offset: 20, Reason: "implausible number of entries"}
	}
	if uint64(ldCacheHeaderSize)+nlibs*ldCacheEntrySize > uint64(len(b)) {
		return nil, &CacheFormatError{Offset: 20, Reason: "entry table runs past the end of the file"}
	}
	c := &LDCache{
		Entries: make([]LDCacheEntry, 0, nlibs),
		byName:  make(map[string][]int, nlibs),
	}
	for i := 0; i < int(nlibs); i++ {
		off := ldCacheHeaderSize + i*ldCacheEntrySize
		e := b[off : off+ldCacheEntrySize]
		name, ok := cString(b, bo.Uint32(e[4:8]))
		if !ok {
			return nil, &CacheFormatError{Offset: off + 4, Reason: "key string out of bounds"}
		}
		path, ok := cString(b, bo.Uint32(e[8:12]))
		if !ok {
			return nil, &CacheFormatError{Offset: off + 8, Reason: "value string out of bounds"}
		}
		c.Entries = append(c.Entries, LDCacheEntry{
			Flags: int32(bo.Uint32(e[0:4])),
			Name:  name,
			Path:  path,
			HWCap: bo.Uint64(e[16:24]),
		})
		c.byName[name] = append(c.byName[name], len(c.Entries)-1)
	}
	return c, nil
}

// maxCacheString bounds each string of the cache at PATH_MAX: names and
// paths are never longer, and the bound keeps a hostile file whose offsets
// all point into one long run without NULs from costing entries × size.
const maxCacheString = 4096

// cString returns the NUL-terminated string at off.
func cString(b []byte, off uint32) (string, bool) {
	if uint64(off) >= uint64(len(b)) {
		return "", false
	}
	s := b[off:]
	if len(s) > maxCacheString {
		s = s[:maxCacheString]
	}
	end := bytes.IndexByte(s, 0)
	if end < 0 {
		return "", false
	}
	return string(s[:end]), true
}

// Lookup returns the entries for soname in cache order.
func (c *LDCache) Lookup(soname string) []LDCacheEntry {
	if c == nil {
		return nil
	}
	idx := c.byName[soname]
	out := make([]LDCacheEntry, len(idx))
	for i, j := range idx {
		out[i] = c.Entries[j]
	}
	return out
}

// ReadLDCache reads and parses the cache file at path.
func ReadLDCache(path string) (*LDCache, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseLDCache(b)
}

// LDSoConf is one parsed ld.so.conf file.
type LDSoConf struct {
	// Dirs are the library directories, in file order.
	Dirs []string
	// Includes are the glob patterns of include lines, made absolute
	// against the including file's directory as ldconfig does.
	Includes []string
}

// ParseLDSoConf parses the ld.so.conf syntax: one or more directories per
// line (separated by blanks, ':' or ','; an "=TYPE" suffix ignored),
// "include PATTERN..." lines, "hwcap" lines (ignored: removed from glibc),
// and '#' comments. Relative directories are ignored, as ldconfig does.
// dir is the directory of the file, for relative include patterns.
func ParseLDSoConf(r io.Reader, dir string) (LDSoConf, error) {
	var conf LDSoConf
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.FieldsFunc(line, func(r rune) bool {
			return r == ' ' || r == '\t' || r == ':' || r == ',' || r == '\r'
		})
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "include":
			for _, pat := range fields[1:] {
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(dir, pat)
				}
				conf.Includes = append(conf.Includes, pat)
			}
			continue
		case "hwcap":
			continue
		}
		for _, f := range fields {
			if i := strings.IndexByte(f, '='); i >= 0 {
				f = f[:i]
			}
			if filepath.IsAbs(f) {
				conf.Dirs = append(conf.Dirs, filepath.Clean(f))
			}
		}
	}
	return conf, sc.Err()
}

// ReadLDSoConfDirs reads path and, recursively, the files its include
// lines name (sorted within each glob, bounded in depth against include
// loops), returning every directory once, in order.
func ReadLDSoConfDirs(path string) ([]string, error) {
	var dirs []string
	seen := map[string]bool{}
	var read func(p string, depth int) error
	read = func(p string, depth int) error {
		if depth > 8 {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		conf, err := ParseLDSoConf(f, filepath.Dir(p))
		f.Close()
		if err != nil {
			return err
		}
		for _, d := range conf.Dirs {
			if !seen[d] {
				seen[d] = true
				dirs = append(dirs, d)
			}
		}
		for _, pat := range conf.Includes {
			matches, _ := filepath.Glob(pat)
			for _, m := range matches {
				// An unreadable included file is skipped, as ldconfig
				// warns and goes on.
				_ = read(m, depth+1)
			}
		}
		return nil
	}
	if err := read(path, 0); err != nil {
		return nil, err
	}
	return dirs, nil
}
