package proxy

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes the proxy sends before a session reaches a postmaster
// (DESIGN.md §5). They mirror PostgreSQL's errcodes.txt.
const (
	// SQLStateProtocolViolation is ERRCODE_PROTOCOL_VIOLATION: malformed or
	// oversized startup packets, login timeouts, TLS required but not used.
	SQLStateProtocolViolation = "08P01"
	// SQLStateInvalidCatalogName is ERRCODE_UNDEFINED_DATABASE: no silo
	// serves the database.
	SQLStateInvalidCatalogName = "3D000"
	// SQLStateCannotConnectNow is ERRCODE_CANNOT_CONNECT_NOW: the silo is
	// starting, failed, draining or shutting down.
	SQLStateCannotConnectNow = "57P03"
	// SQLStateTooManyConnections is ERRCODE_TOO_MANY_CONNECTIONS: the silo
	// has max_clients sessions already.
	SQLStateTooManyConnections = "53300"
	// SQLStateInvalidAuthorizationSpecification is
	// ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, which PostgreSQL uses for
	// a startup packet without a user name.
	SQLStateInvalidAuthorizationSpecification = "28000"
)

// ClientError is an error the client is told about: it becomes a FATAL
// ErrorResponse carrying SQLState and Message, after which the connection
// is closed without a ReadyForQuery (a client that got ReadyForQuery would
// believe the session usable).
//
// Message is sent to the client and must never contain startup option
// values other than the database name PostgreSQL itself would echo, nor
// anything about other silos. Err is the cause, for logs only.
type ClientError struct {
	SQLState string
	Message  string
	Err      error
}

func (e *ClientError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s %s: %v", e.SQLState, e.Message, e.Err)
	}
	return e.SQLState + " " + e.Message
}

func (e *ClientError) Unwrap() error { return e.Err }

// AppendErrorResponse appends the ErrorResponse message for e to dst. Both
// the localized (S) and the unlocalized (V) severity are FATAL, as a
// PostgreSQL server sends them.
func (e *ClientError) AppendErrorResponse(dst []byte) []byte {
	msg := pgproto3.ErrorResponse{
		Severity:            "FATAL",
		SeverityUnlocalized: "FATAL",
		Code:                e.SQLState,
		Message:             e.Message,
	}
	out, err := msg.Encode(dst)
	if err != nil {
		// Encode fails only when the message exceeds the 1 GiB wire
		// limit; our messages are a few dozen bytes.
		panic("BUG: encoding ErrorResponse: " + err.Error())
	}
	return out
}

// protocolViolation builds the 08P01 ClientError for a malformed packet.
func protocolViolation(format string, args ...any) *ClientError {
	return &ClientError{SQLState: SQLStateProtocolViolation, Message: fmt.Sprintf(format, args...)}
}
