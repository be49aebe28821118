package ipush

// errors.go owns the error values and types the SDK returns.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

var (
	// ErrClosed is returned by calls on a client after Close.
	ErrClosed = errors.New("ipush: client closed")
	// ErrNotConnected is returned by a send while no stream is open (on
	// WebSocket and the chunked stream; over SSE sends use POST /send).
	ErrNotConnected = errors.New("ipush: not connected")
	// ErrReplaced ends Run when another connection of the same uid replaced
	// this one (unless Options.ReconnectOnReplaced).
	ErrReplaced = errors.New("ipush: replaced by another connection of the same uid")
	// ErrHeartbeatTimeout is the disconnect reason of a stream that was
	// silent for 3 heartbeat intervals.
	ErrHeartbeatTimeout = errors.New("ipush: no data from the server for 3 heartbeat intervals")
	// ErrRunning is returned by Run when the client is already running.
	ErrRunning = errors.New("ipush: Run called twice")
)

// APIError is an HTTP error answer of the server: a 4xx or 5xx status with a
// {"error":"reason"} body (Reason is the body text when it is not that JSON).
type APIError struct {
	Status int
	Reason string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("ipush: HTTP %d: %s", e.Status, e.Reason)
}

// ProtocolError is a malformed chunk, frame or event from the server. The
// client reports it as an error event and reconnects.
type ProtocolError struct {
	Transport Transport
	Err       error
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("ipush: malformed data from the server (%s): %v", e.Transport, e.Err)
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// apiErrorFrom builds an APIError from an HTTP response, reading at most 64
// KiB of its body.
func apiErrorFrom(resp *http.Response) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &APIError{Status: resp.StatusCode, Reason: reasonOf(body, resp.Status)}
}

func reasonOf(body []byte, status string) string {
	var e struct {
		Error *string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil {
		return *e.Error
	}
	if s := strings.TrimSpace(string(body)); s != "" {
		return s
	}
	return status
}

// redirectError is a 303 See Other answer to a connect.
type redirectError struct{ location string }

func (e *redirectError) Error() string { return "ipush: 303 See Other to " + e.location }

// unavailableError says this transport cannot be used with this server or
// proxy (it did not upgrade or answered with something else): the client tries
// the next transport in its list.
type unavailableError struct {
	transport Transport
	err       error
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("ipush: %s unavailable: %v", e.transport, e.err)
}

func (e *unavailableError) Unwrap() error { return e.err }
