package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// oneByteReader returns at most one byte per Read, like a client whose
// packet arrives in many TCP segments.
type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func cancelPacket(pid uint32, secret []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(12+len(secret)))
	b = binary.BigEndian.AppendUint32(b, cancelRequestCode)
	b = binary.BigEndian.AppendUint32(b, pid)
	return append(b, secret...)
}

func codePacket(code uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, 8)
	return binary.BigEndian.AppendUint32(b, code)
}

// rawPacket builds a packet with a given length word and body.
func rawPacket(length uint32, body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, length), body...)
}

func TestReadStartup(t *testing.T) {
	t.Parallel()
	long := bytes.Repeat([]byte{0xab}, 256)
	name70 := strings.Repeat("d", 70)
	tests := []struct {
		name     string
		in       []byte
		kind     PacketKind
		user, db string
		version  uint32
		sqlstate string // expected ClientError
		eof      bool   // expected io.EOF
		short    bool   // expected io.ErrUnexpectedEOF
	}{
		{name: "startup 3.0", in: startupPacket(ProtocolVersion30, "user", "alice", "database", "sales"),
			kind: KindStartupMessage, user: "alice", db: "sales", version: ProtocolVersion30},
		{name: "startup 3.2", in: startupPacket(ProtocolVersion32, "user", "alice", "database", "sales", "_pq_.x", "1"),
			kind: KindStartupMessage, user: "alice", db: "sales", version: ProtocolVersion32},
		{name: "startup 3.1 forwarded for the postmaster to negotiate", in: startupPacket(3<<16|1, "user", "u"),
			kind: KindStartupMessage, user: "u", db: "u", version: 3<<16 | 1},
		{name: "database defaults to user", in: startupPacket(ProtocolVersion30, "user", "bob"),
			kind: KindStartupMessage, user: "bob", db: "bob", version: ProtocolVersion30},
		{name: "empty database defaults to user", in: startupPacket(ProtocolVersion30, "database", "", "user", "bob"),
			kind: KindStartupMessage, user: "bob", db: "bob", version: ProtocolVersion30},
		{name: "duplicate parameters: last wins as in the postmaster",
			in:   startupPacket(ProtocolVersion30, "database", "first", "user", "u", "database", "second"),
			kind: KindStartupMessage, user: "u", db: "second", version: ProtocolVersion30},
		{name: "non-UTF8 bytes kept as bytes", in: startupPacket(ProtocolVersion30, "user", "u\xff\xfe", "database", "d\x80"),
			kind: KindStartupMessage, user: "u\xff\xfe", db: "d\x80", version: ProtocolVersion30},
		{name: "other parameters and options ignored", in: startupPacket(ProtocolVersion30, "application_name", "psql", "options", "-c x=1", "user", "u"),
			kind: KindStartupMessage, user: "u", db: "u", version: ProtocolVersion30},
		{name: "long names truncated to NAMEDATALEN-1", in: startupPacket(ProtocolVersion30, "user", "u", "database", name70),
			kind: KindStartupMessage, user: "u", db: name70[:63], version: ProtocolVersion30},
		{name: "SSLRequest", in: codePacket(sslRequestCode), kind: KindSSLRequest},
		{name: "GSSENCRequest", in: codePacket(gssEncRequestCode), kind: KindGSSENCRequest},
		{name: "CancelRequest 4-byte key", in: cancelPacket(7, []byte{1, 2, 3, 4}), kind: KindCancelRequest},
		{name: "CancelRequest 256-byte key", in: cancelPacket(7, long), kind: KindCancelRequest},
		{name: "direct TLS ClientHello", in: []byte{0x16, 0x03, 0x01, 0x02, 0x00}, kind: KindDirectTLS},

		{name: "empty connection", in: nil, eof: true},
		{name: "truncated length word", in: []byte{0, 0}, short: true},
		{name: "truncated body", in: startupPacket(ProtocolVersion30, "user", "u")[:10], short: true},
		{name: "length below 8", in: rawPacket(7, []byte{0, 3, 0}), sqlstate: "08P01"},
		{name: "length zero", in: rawPacket(0, nil), sqlstate: "08P01"},
		{name: "oversized length", in: rawPacket(MaxStartupPacketLength+1, nil), sqlstate: "08P01"},
		{name: "huge length", in: rawPacket(0x7fffffff, nil), sqlstate: "08P01"},
		{name: "protocol 2.0 rejected", in: startupPacket(2<<16, "user", "u"), sqlstate: "08P01"},
		{name: "protocol 4.0 rejected", in: startupPacket(4<<16, "user", "u"), sqlstate: "08P01"},
		{name: "unknown 1234.x request code", in: codePacket(1234<<16 | 9999), sqlstate: "08P01"},
		{name: "SSLRequest with trailing bytes", in: rawPacket(12, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, sslRequestCode), 0)), sqlstate: "08P01"},
		{name: "GSSENCRequest with trailing bytes", in: rawPacket(9, append(binary.BigEndian.AppendUint32(nil, gssEncRequestCode), 0)), sqlstate: "08P01"},
		{name: "CancelRequest key too short", in: cancelPacket(7, []byte{1, 2, 3}), sqlstate: "08P01"},
		{name: "CancelRequest key too long", in: cancelPacket(7, append(long, 1)), sqlstate: "08P01"},
		{name: "missing user", in: startupPacket(ProtocolVersion30, "database", "d"), sqlstate: "28000"},
		{name: "empty user", in: startupPacket(ProtocolVersion30, "user", ""), sqlstate: "28000"},
		{name: "no parameters at all", in: startupPacket(ProtocolVersion30), sqlstate: "28000"},
		{name: "missing terminator", in: func() []byte {
			p := startupPacket(ProtocolVersion30, "user", "u")
			p = p[:len(p)-1]
			binary.BigEndian.PutUint32(p, uint32(len(p)))
			return p
		}(), sqlstate: "08P01"},
		{name: "value without NUL", in: func() []byte {
			p := append(startupPacket(ProtocolVersion30)[:8], "user\x00u"...)
			binary.BigEndian.PutUint32(p, uint32(len(p)))
			return p
		}(), sqlstate: "08P01"},
		{name: "name without value", in: func() []byte {
			p := append(startupPacket(ProtocolVersion30)[:8], "user\x00"...)
			binary.BigEndian.PutUint32(p, uint32(len(p)))
			return p
		}(), sqlstate: "08P01"},
		{name: "bytes after terminator", in: func() []byte {
			p := append(startupPacket(ProtocolVersion30, "user", "u"), "database\x00x\x00\x00"...)
			binary.BigEndian.PutUint32(p, uint32(len(p)))
			return p
		}(), sqlstate: "08P01"},
		{name: "empty name ends the list early", in: func() []byte {
			p := append(startupPacket(ProtocolVersion30)[:8], "user\x00u\x00\x00database\x00x\x00\x00"...)
			binary.BigEndian.PutUint32(p, uint32(len(p)))
			return p
		}(), sqlstate: "08P01"},
	}
	for _, tt := range tests {
		for _, chunked := range []bool{false, true} {
			name := tt.name
			if chunked {
				name += "/one byte per read"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var r io.Reader = bytes.NewReader(tt.in)
				if chunked {
					r = &oneByteReader{r}
				}
				var st Startup
				err := ReadStartup(r, &st)
				switch {
				case tt.eof:
					if err != io.EOF {
						t.Fatalf("got %v, want io.EOF", err)
					}
					return
				case tt.short:
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
					}
					return
				case tt.sqlstate != "":
					var ce *ClientError
					if !errors.As(err, &ce) || ce.SQLState != tt.sqlstate {
						t.Fatalf("got %v, want ClientError %s", err, tt.sqlstate)
					}
					return
				}
				if err != nil {
					t.Fatalf("ReadStartup: %v", err)
				}
				if st.Kind != tt.kind || st.User != tt.user || st.Database != tt.db || st.ProtocolVersion != tt.version {
					t.Fatalf("got kind %v user %q db %q version %#x, want %v %q %q %#x",
						st.Kind, st.User, st.Database, st.ProtocolVersion, tt.kind, tt.user, tt.db, tt.version)
				}
				want := tt.in
				if tt.kind == KindDirectTLS {
					want = tt.in[:4]
				}
				if !bytes.Equal(st.Raw, want) {
					t.Fatalf("Raw = %x, want the packet byte for byte %x", st.Raw, want)
				}
			})
		}
	}
}

// TestReadStartupExact checks that ReadStartup consumes exactly one packet
// and leaves what follows (a pipelined query) unread.
func TestReadStartupExact(t *testing.T) {
	t.Parallel()
	pkt := startupPacket(ProtocolVersion30, "user", "u", "database", "d")
	query, _ := (&pgproto3.Query{String: "select 1"}).Encode(nil)
	r := bytes.NewReader(append(append([]byte(nil), pkt...), query...))
	var st Startup
	if err := ReadStartup(&oneByteReader{r}, &st); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if !bytes.Equal(rest, query) {
		t.Fatalf("bytes after the startup packet: got %x, want %x", rest, query)
	}
}

func TestCancelKeyAndDecodeWithPgproto3(t *testing.T) {
	t.Parallel()
	for _, secret := range [][]byte{{9, 8, 7, 6}, bytes.Repeat([]byte{5}, 32), bytes.Repeat([]byte{1}, 256)} {
		in := cancelPacket(4242, secret)
		var st Startup
		if err := ReadStartup(bytes.NewReader(in), &st); err != nil {
			t.Fatal(err)
		}
		// The proxy's key is pid followed by secret: the BackendKeyData
		// payload, which pgproto3 decodes the same way.
		var cr pgproto3.CancelRequest
		if err := cr.Decode(st.Raw[4:]); err != nil {
			t.Fatal(err)
		}
		want := append(binary.BigEndian.AppendUint32(nil, cr.ProcessID), cr.SecretKey...)
		if !bytes.Equal(st.CancelKey(), want) || cr.ProcessID != 4242 {
			t.Fatalf("CancelKey = %x, want %x", st.CancelKey(), want)
		}
	}
	var st Startup
	if err := ReadStartup(bytes.NewReader(codePacket(sslRequestCode)), &st); err != nil {
		t.Fatal(err)
	}
	if st.CancelKey() != nil {
		t.Fatal("CancelKey of an SSLRequest must be nil")
	}
}

// TestReadStartupReusesStorage checks that a Startup read twice reuses
// its Raw buffer (the session reads up to three packets on one value).
func TestReadStartupReusesStorage(t *testing.T) {
	t.Parallel()
	var st Startup
	big := startupPacket(ProtocolVersion30, "user", "someone", "database", "somewhere")
	if err := ReadStartup(bytes.NewReader(big), &st); err != nil {
		t.Fatal(err)
	}
	first := &st.Raw[0]
	if err := ReadStartup(bytes.NewReader(codePacket(sslRequestCode)), &st); err != nil {
		t.Fatal(err)
	}
	if &st.Raw[0] != first || st.Kind != KindSSLRequest || st.User != "" {
		t.Fatalf("second read: kind %v user %q, storage reused %v", st.Kind, st.User, &st.Raw[0] == first)
	}
}

func FuzzReadStartup(f *testing.F) {
	f.Add(startupPacket(ProtocolVersion30, "user", "u", "database", "d"))
	f.Add(startupPacket(ProtocolVersion32, "user", "u", "_pq_.a", "b"))
	f.Add(startupPacket(ProtocolVersion30, "database", "d"))
	f.Add(codePacket(sslRequestCode))
	f.Add(codePacket(gssEncRequestCode))
	f.Add(cancelPacket(1, []byte{1, 2, 3, 4}))
	f.Add(cancelPacket(1, bytes.Repeat([]byte{7}, 256)))
	f.Add([]byte{0x16, 3, 1, 0, 0})
	f.Add(rawPacket(8, []byte{0, 3, 0, 0}))
	f.Add(rawPacket(20000, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		var st Startup
		err := ReadStartup(bytes.NewReader(in), &st)
		if err != nil {
			var ce *ClientError
			if errors.As(err, &ce) && (ce.SQLState == "" || ce.Message == "") {
				t.Fatalf("ClientError without SQLSTATE or message: %v", ce)
			}
			return
		}
		switch st.Kind {
		case KindDirectTLS:
			if len(st.Raw) != 4 || st.Raw[0] != tlsHandshakeRecord {
				t.Fatalf("direct TLS with Raw %x", st.Raw)
			}
			return
		case KindStartupMessage:
			if st.User == "" || st.Database == "" || st.ProtocolVersion>>16 != 3 {
				t.Fatalf("accepted startup with user %q db %q version %#x", st.User, st.Database, st.ProtocolVersion)
			}
			if len(st.User) >= nameDataLen || len(st.Database) >= nameDataLen {
				t.Fatal("names not truncated")
			}
		case KindCancelRequest:
			if k := len(st.CancelKey()); k < 8 || k > 4+maxCancelKeyLength {
				t.Fatalf("cancel key of %d bytes", k)
			}
		case KindSSLRequest, KindGSSENCRequest:
		default:
			t.Fatalf("unknown kind %v", st.Kind)
		}
		n := binary.BigEndian.Uint32(in)
		if int(n) != len(st.Raw) || !bytes.Equal(st.Raw, in[:n]) {
			t.Fatal("Raw is not the packet byte for byte")
		}
	})
}

func BenchmarkReadStartup(b *testing.B) {
	pkt := startupPacket(ProtocolVersion30, "user", "bench", "database", "sales",
		"application_name", "pgbench", "client_encoding", "UTF8", "DateStyle", "ISO")
	r := bytes.NewReader(pkt)
	var st Startup
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		r.Reset(pkt)
		if err := ReadStartup(r, &st); err != nil {
			b.Fatal(err)
		}
	}
}
