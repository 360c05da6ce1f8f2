package proxy

import (
	"encoding/binary"
	"fmt"
)

// Backend message types the proxy looks for while a session starts.
const (
	msgBackendKeyData = 'K'
	msgReadyForQuery  = 'Z'
)

// maxBackendKeyDataBody is the largest BackendKeyData body: a 4-byte pid and
// a secret of up to MAX_CANCEL_KEY_LENGTH bytes (protocol 3.2).
const maxBackendKeyDataBody = 4 + maxCancelKeyLength

// backendScanner follows the message boundaries of the postmaster's byte
// stream during the startup phase, without holding any of it back. The
// session reads whatever the socket has, forwards every byte to the client
// at once, and feeds the same bytes to the scanner, which notes
// BackendKeyData and reports where the first ReadyForQuery ends. Bytes past
// that point (answers to a query the client pipelined) have already been
// forwarded with the rest, so nothing is lost or delayed and a single read
// and write serve several small messages, unlike message-at-a-time reads.
type backendScanner struct {
	hdr   [5]byte // type byte and length word of the current message
	hdrN  int     // bytes of hdr filled
	typ   byte
	left  int // body bytes of the current message still to come
	key   [maxBackendKeyDataBody]byte
	keyN  int
	keyOK bool // a complete BackendKeyData was seen
	ready bool // the first ReadyForQuery was seen
}

// scan consumes p. It returns the offset in p just past the first
// ReadyForQuery, or -1 when p does not complete one. It fails on a message
// whose length word is impossible, since the stream can then no longer be
// followed.
func (s *backendScanner) scan(p []byte) (int, error) {
	off := 0
	for off < len(p) {
		if s.left == 0 && s.hdrN < len(s.hdr) {
			n := copy(s.hdr[s.hdrN:], p[off:])
			s.hdrN += n
			off += n
			if s.hdrN < len(s.hdr) {
				return -1, nil
			}
			s.typ = s.hdr[0]
			length := binary.BigEndian.Uint32(s.hdr[1:])
			if length < 4 || length > 1<<30 {
				return -1, fmt.Errorf("postmaster sent message %q with invalid length %d", s.typ, length)
			}
			s.left = int(length) - 4
			if s.typ == msgBackendKeyData {
				if s.left < 8 || s.left > maxBackendKeyDataBody {
					return -1, fmt.Errorf("postmaster sent BackendKeyData of invalid length %d", length)
				}
				s.keyN, s.keyOK = 0, false
			}
			if s.left == 0 {
				if end, done := s.finish(off); done {
					return end, nil
				}
				continue
			}
		}
		n := min(s.left, len(p)-off)
		if s.typ == msgBackendKeyData {
			copy(s.key[s.keyN:], p[off:off+n])
			s.keyN += n
		}
		s.left -= n
		off += n
		if s.left == 0 {
			if end, done := s.finish(off); done {
				return end, nil
			}
		}
	}
	return -1, nil
}

// finish ends the current message at offset off.
func (s *backendScanner) finish(off int) (int, bool) {
	s.hdrN = 0
	switch s.typ {
	case msgBackendKeyData:
		s.keyOK = true
	case msgReadyForQuery:
		s.ready = true
		return off, true
	}
	return -1, false
}

// cancelKey returns the pid and secret of the session's BackendKeyData, the
// key a CancelRequest for this session carries, or nil before one was seen.
func (s *backendScanner) cancelKey() []byte {
	if !s.keyOK {
		return nil
	}
	return s.key[:s.keyN]
}
