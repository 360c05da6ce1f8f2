package proxy

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestClientErrorResponse(t *testing.T) {
	t.Parallel()
	tests := []ClientError{
		{SQLState: SQLStateInvalidCatalogName, Message: `database "nope" does not exist`},
		{SQLState: SQLStateCannotConnectNow, Message: "the database system is not accepting connections"},
		{SQLState: SQLStateTooManyConnections, Message: "sorry, too many clients already"},
		{SQLState: SQLStateProtocolViolation, Message: "invalid length of startup packet"},
	}
	for _, ce := range tests {
		t.Run(ce.SQLState, func(t *testing.T) {
			t.Parallel()
			buf := ce.AppendErrorResponse([]byte("prefix"))
			if string(buf[:6]) != "prefix" || buf[6] != 'E' {
				t.Fatalf("not appended as an 'E' message: %q", buf)
			}
			var er pgproto3.ErrorResponse
			if err := er.Decode(buf[11:]); err != nil {
				t.Fatal(err)
			}
			if er.Severity != "FATAL" || er.SeverityUnlocalized != "FATAL" || er.Code != ce.SQLState || er.Message != ce.Message {
				t.Fatalf("decoded %+v from %+v", er, ce)
			}
			if n := int(uint32(buf[7])<<24 | uint32(buf[8])<<16 | uint32(buf[9])<<8 | uint32(buf[10])); n != len(buf)-7 {
				t.Fatalf("length word %d, message has %d bytes", n, len(buf)-7)
			}
		})
	}
}

func TestClientErrorUnwrap(t *testing.T) {
	t.Parallel()
	ce := &ClientError{SQLState: SQLStateCannotConnectNow, Message: "m", Err: errInjected}
	if !errors.Is(ce, errInjected) {
		t.Fatal("ClientError does not unwrap to its cause")
	}
	if got := ce.Error(); got != "57P03 m: injected" {
		t.Fatalf("Error() = %q", got)
	}
}
