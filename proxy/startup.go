package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Limits and request codes of the startup phase, from PostgreSQL's
// src/include/libpq/pqcomm.h.
const (
	// MaxStartupPacketLength mirrors MAX_STARTUP_PACKET_LENGTH: the
	// postmaster refuses longer startup packets, and so do we, before
	// allocating anything for them.
	MaxStartupPacketLength = 10000
	// minStartupPacketLength is the length word plus a 4-byte code: the
	// smallest packet PostgreSQL accepts.
	minStartupPacketLength = 8

	sslRequestCode    = 1234<<16 | 5679 // NEGOTIATE_SSL_CODE
	gssEncRequestCode = 1234<<16 | 5680 // NEGOTIATE_GSS_CODE
	cancelRequestCode = 1234<<16 | 5678 // CANCEL_REQUEST_CODE

	// Protocol versions: major in the high 16 bits, minor in the low.
	ProtocolVersion30 = 3<<16 | 0
	ProtocolVersion32 = 3<<16 | 2

	// maxCancelKeyLength mirrors MAX_CANCEL_KEY_LENGTH (protocol 3.2):
	// cancel secrets are 4 bytes in 3.0 and up to 256 bytes in 3.2.
	maxCancelKeyLength = 256
	minCancelKeyLength = 4

	// nameDataLen mirrors NAMEDATALEN: the postmaster truncates user and
	// database names to NAMEDATALEN-1 bytes before looking them up, so the
	// proxy routes on the same truncated name.
	nameDataLen = 64

	// tlsHandshakeRecord is the first byte of a TLS ClientHello record,
	// the signal of PostgreSQL 17's direct TLS negotiation (sslnegotiation
	// =direct). No valid startup packet starts with it: its length would
	// exceed MaxStartupPacketLength.
	tlsHandshakeRecord = 0x16
)

// PacketKind names the packets a client may open a connection with.
type PacketKind uint8

const (
	// KindStartupMessage is a StartupMessage: protocol version and
	// parameters.
	KindStartupMessage PacketKind = iota + 1
	// KindSSLRequest asks to negotiate TLS; the answer is 'S' or 'N'.
	KindSSLRequest
	// KindGSSENCRequest asks for GSSAPI encryption; the answer is 'N'.
	KindGSSENCRequest
	// KindCancelRequest carries a backend's pid and secret key.
	KindCancelRequest
	// KindDirectTLS is a TLS ClientHello sent without an SSLRequest;
	// Startup.Raw holds the bytes already read, which must be replayed
	// to the TLS server.
	KindDirectTLS
)

func (k PacketKind) String() string {
	switch k {
	case KindStartupMessage:
		return "StartupMessage"
	case KindSSLRequest:
		return "SSLRequest"
	case KindGSSENCRequest:
		return "GSSENCRequest"
	case KindCancelRequest:
		return "CancelRequest"
	case KindDirectTLS:
		return "direct TLS"
	}
	return fmt.Sprintf("PacketKind(%d)", uint8(k))
}

// Startup is one decoded packet of the startup phase.
type Startup struct {
	Kind PacketKind
	// Raw is the packet exactly as the client sent it, length word
	// included. A StartupMessage is forwarded to the postmaster from Raw
	// byte for byte: re-encoding it would lose the order and duplicates of
	// parameters, which the postmaster interprets itself.
	Raw []byte
	// ProtocolVersion of a StartupMessage (major<<16 | minor).
	ProtocolVersion uint32
	// User is the user parameter, truncated as the postmaster truncates
	// it. The last occurrence wins, as in the postmaster.
	User string
	// Database is the database parameter, or User when it is missing or
	// empty (PostgreSQL's default), truncated like User.
	Database string
}

// CancelKey returns the full cancel key of a CancelRequest: the backend's
// pid followed by its secret, as the bytes BackendKeyData carried. Keys are
// compared whole because pids repeat across silos (one pid namespace each).
func (s *Startup) CancelKey() []byte {
	if s.Kind != KindCancelRequest {
		return nil
	}
	return s.Raw[8:]
}

// ReadStartup reads one startup-phase packet from r into st, reusing
// st.Raw's storage. It reads exactly the packet's bytes and nothing more,
// so that bytes the client pipelines after it (a query sent before
// authentication completed, or a TLS ClientHello) stay in the connection.
//
// The parameters are walked here rather than decoded with
// pgproto3.StartupMessage: that type refuses protocol minors other than 3.0
// and 3.2 (the postmaster should negotiate those itself), folds repeated
// parameters into a map, and allocates every name and value, while the
// proxy needs only user and database, with the postmaster's own rules.
//
// Malformed packets yield a *ClientError with SQLSTATE 08P01 (or 28000 for
// a missing user). A connection closed before its first byte yields io.EOF;
// one closed mid-packet yields an error wrapping io.ErrUnexpectedEOF.
func ReadStartup(r io.Reader, st *Startup) error {
	// The length word is read into Raw's own storage: a local array would
	// escape through the io.Reader interface and cost an allocation.
	raw := st.Raw[:0]
	if cap(raw) < minStartupPacketLength {
		raw = make([]byte, 0, 512)
	}
	*st = Startup{Raw: raw[:4]}
	if n, err := io.ReadFull(r, st.Raw); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("reading startup packet length: %w", err)
	}
	if st.Raw[0] == tlsHandshakeRecord {
		st.Kind = KindDirectTLS
		return nil
	}
	length := binary.BigEndian.Uint32(st.Raw)
	if length < minStartupPacketLength || length > MaxStartupPacketLength {
		return protocolViolation("invalid length of startup packet")
	}
	if cap(st.Raw) < int(length) {
		st.Raw = append(make([]byte, 0, length), st.Raw...)
	}
	st.Raw = st.Raw[:length]
	if _, err := io.ReadFull(r, st.Raw[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading startup packet body: %w", err)
	}
	return st.decode()
}

// decode interprets st.Raw, which holds a complete packet.
func (st *Startup) decode() error {
	code := binary.BigEndian.Uint32(st.Raw[4:8])
	switch code {
	case sslRequestCode:
		if len(st.Raw) != minStartupPacketLength {
			return protocolViolation("invalid length of SSL negotiation packet")
		}
		st.Kind = KindSSLRequest
		return nil
	case gssEncRequestCode:
		if len(st.Raw) != minStartupPacketLength {
			return protocolViolation("invalid length of GSSAPI negotiation packet")
		}
		st.Kind = KindGSSENCRequest
		return nil
	case cancelRequestCode:
		// 4 length + 4 code + 4 pid + secret.
		keyLen := len(st.Raw) - 12
		if keyLen < minCancelKeyLength || keyLen > maxCancelKeyLength {
			return protocolViolation("invalid length of query cancel packet")
		}
		st.Kind = KindCancelRequest
		return nil
	}
	if major := code >> 16; major != 3 {
		return protocolViolation("unsupported frontend protocol %d.%d: server supports 3.0 to 3.2", major, code&0xffff)
	}
	st.Kind = KindStartupMessage
	st.ProtocolVersion = code
	return st.decodeParameters(st.Raw[8:])
}

// decodeParameters walks the name/value pairs of a StartupMessage the way
// the postmaster's ProcessStartupPacket does, so that the proxy and the
// postmaster agree on which user and database the packet names: the list
// ends at an empty name, that terminator must be the packet's last byte,
// and a repeated parameter's last value wins. Names and values are bytes,
// not necessarily UTF-8; the postmaster interprets them in its own
// encoding and so the proxy compares them as bytes.
func (st *Startup) decodeParameters(p []byte) error {
	var user, database []byte
	for {
		if len(p) == 0 {
			return protocolViolation("invalid startup packet layout: expected terminator as last byte")
		}
		if p[0] == 0 {
			if len(p) != 1 {
				return protocolViolation("invalid startup packet layout: expected terminator as last byte")
			}
			break
		}
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return protocolViolation("invalid startup packet layout: expected terminator as last byte")
		}
		name := p[:i]
		p = p[i+1:]
		j := bytes.IndexByte(p, 0)
		if j < 0 {
			return protocolViolation("invalid startup packet layout: expected terminator as last byte")
		}
		value := p[:j]
		p = p[j+1:]
		switch string(name) {
		case "user":
			user = value
		case "database":
			database = value
		}
	}
	if len(user) == 0 {
		return &ClientError{
			SQLState: SQLStateInvalidAuthorizationSpecification,
			Message:  "no PostgreSQL user name specified in startup packet",
		}
	}
	st.User = string(truncateName(user))
	if len(database) == 0 {
		st.Database = st.User
	} else {
		st.Database = string(truncateName(database))
	}
	return nil
}

// truncateName cuts a name to NAMEDATALEN-1 bytes, as the postmaster does
// with user and database names before looking them up.
func truncateName(b []byte) []byte {
	if len(b) >= nameDataLen {
		return b[:nameDataLen-1]
	}
	return b
}
