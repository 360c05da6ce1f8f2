package proxy

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func encodeAll(t testing.TB, msgs ...pgproto3.BackendMessage) []byte {
	t.Helper()
	var out []byte
	for _, m := range msgs {
		var err error
		out, err = m.Encode(out)
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestBackendScanner(t *testing.T) {
	t.Parallel()
	longSecret := bytes.Repeat([]byte{0xcd}, 256)
	startup := func(secret []byte) []byte {
		return encodeAll(t,
			&pgproto3.AuthenticationOk{},
			&pgproto3.ParameterStatus{Name: "server_version", Value: "17.0"},
			&pgproto3.BackendKeyData{ProcessID: 77, SecretKey: secret},
			&pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"},
			&pgproto3.ReadyForQuery{TxStatus: 'I'},
		)
	}
	trailer := encodeAll(t, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	tests := []struct {
		name    string
		stream  []byte
		wantKey []byte
	}{
		{"4-byte secret", startup([]byte{1, 2, 3, 4}), []byte{0, 0, 0, 77, 1, 2, 3, 4}},
		{"256-byte secret (protocol 3.2)", startup(longSecret), append([]byte{0, 0, 0, 77}, longSecret...)},
		{"no BackendKeyData", encodeAll(t, &pgproto3.AuthenticationOk{}, &pgproto3.ReadyForQuery{TxStatus: 'I'}), nil},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 2, 3, 5, 7, 64, 1 << 20} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				stream := append(append([]byte(nil), tt.stream...), trailer...)
				var sc backendScanner
				end := -1
				pos := 0
				for pos < len(stream) && end < 0 {
					n := min(chunk, len(stream)-pos)
					e, err := sc.scan(stream[pos : pos+n])
					if err != nil {
						t.Fatal(err)
					}
					if e >= 0 {
						end = pos + e
					}
					pos += n
				}
				if end != len(tt.stream) {
					t.Fatalf("chunk %d: ReadyForQuery ends at %d, want %d", chunk, end, len(tt.stream))
				}
				if !bytes.Equal(sc.cancelKey(), tt.wantKey) {
					t.Fatalf("chunk %d: key %x, want %x", chunk, sc.cancelKey(), tt.wantKey)
				}
			})
		}
	}
}

func TestBackendScannerRejectsBadLengths(t *testing.T) {
	t.Parallel()
	tests := map[string][]byte{
		"length below 4":             {'R', 0, 0, 0, 3},
		"BackendKeyData too short":   {'K', 0, 0, 0, 8, 0, 0, 0, 1},
		"BackendKeyData too long":    append([]byte{'K', 0, 0, 1, 9}, make([]byte, 261)...),
		"length beyond message size": {'D', 0x7f, 0xff, 0xff, 0xff},
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var sc backendScanner
			if _, err := sc.scan(in); err == nil {
				t.Fatal("scan accepted an impossible message")
			}
		})
	}
}

func FuzzBackendScanner(f *testing.F) {
	f.Add(encodeAll(f, &pgproto3.AuthenticationOk{}, &pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}, &pgproto3.ReadyForQuery{TxStatus: 'I'}), uint8(3))
	f.Add([]byte{'K', 0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 'Z', 0, 0, 0, 5, 'I'}, uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		c := int(chunk)%16 + 1
		var sc backendScanner
		for pos := 0; pos < len(in); pos += c {
			end, err := sc.scan(in[pos:min(pos+c, len(in))])
			if err != nil {
				return
			}
			if end >= 0 {
				if end > c {
					t.Fatalf("end %d outside chunk of %d", end, c)
				}
				return
			}
		}
		if k := sc.cancelKey(); k != nil && (len(k) < 8 || len(k) > maxBackendKeyDataBody) {
			t.Fatalf("key of %d bytes", len(k))
		}
	})
}
