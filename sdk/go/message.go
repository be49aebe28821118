package ipush

// message.go owns the message model and its two codecs (JSON and MessagePack).
// Everything here is pure: encoders append to a buffer the caller owns,
// decoders take a complete payload and do no I/O.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// MessageType is the "y" key of a message.
type MessageType int

// The message types of the protocol.
const (
	TypeHeartbeat   MessageType = 0 // {"y":0}
	TypeSubscribe   MessageType = 1 // {"y":1,"c":...}
	TypeUnsubscribe MessageType = 2 // {"y":2,"c":...}
	TypeUser        MessageType = 3 // a message to one user
	TypeChannel     MessageType = 4 // a message to every member of a channel
	TypeAck         MessageType = 5 // {"y":5,"s":N}
)

func (t MessageType) String() string {
	switch t {
	case TypeHeartbeat:
		return "heartbeat"
	case TypeSubscribe:
		return "subscribe"
	case TypeUnsubscribe:
		return "unsubscribe"
	case TypeUser:
		return "user"
	case TypeChannel:
		return "channel"
	case TypeAck:
		return "ack"
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// Message is one protocol message. The JSON/MessagePack keys are
// y (Type), f (From), t (To), s (Seq), u (User), c (Channel), b (Body).
//
// String fields are encoded only when non-empty, except Body, which is always
// encoded on user and channel messages (an empty body is a valid body).
// Seq is meaningful only when HasSeq is true: a message published with ttl 0
// carries no seq.
type Message struct {
	Type    MessageType
	From    string
	To      string
	Seq     uint64
	HasSeq  bool
	User    string
	Channel string
	Body    string
}

// StreamError is a stream-ending signal from the server: a final
// {"error":"<reason>"} chunk or event, or a WebSocket close whose reason is
// that JSON. Reason "moved" carries the Location to reconnect to.
type StreamError struct {
	Reason   string
	Location string
}

func (e *StreamError) Error() string {
	if e.Location != "" {
		return "ipush: stream ended: " + e.Reason + " (location " + e.Location + ")"
	}
	return "ipush: stream ended: " + e.Reason
}

// frame is what a decoder makes of one payload: a message, or a stream end.
type frame struct {
	msg Message
	end *StreamError
}

var errNotObject = errors.New("payload is not an object")

func (m Message) hasBody() bool { return m.Type == TypeUser || m.Type == TypeChannel || m.Body != "" }

// validate checks what an encoder cannot represent.
func (m Message) validate() error {
	for _, s := range [...]string{m.From, m.To, m.User, m.Channel, m.Body} {
		if !utf8.ValidString(s) {
			return errors.New("ipush: message field is not valid UTF-8")
		}
	}
	return nil
}

// AppendJSON appends the JSON encoding of m to dst, keys in the order
// y, f, t, c, u, b, s (the order the server uses).
func (m Message) AppendJSON(dst []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return dst, err
	}
	dst = append(dst, `{"y":`...)
	dst = strconv.AppendInt(dst, int64(m.Type), 10)
	str := func(key, v string, always bool) {
		if v == "" && !always {
			return
		}
		dst = append(dst, ',', '"')
		dst = append(dst, key...)
		dst = append(dst, '"', ':')
		dst = appendJSONString(dst, v)
	}
	str("f", m.From, false)
	str("t", m.To, false)
	str("c", m.Channel, false)
	str("u", m.User, false)
	str("b", m.Body, m.hasBody())
	if m.HasSeq {
		dst = append(dst, `,"s":`...)
		dst = strconv.AppendUint(dst, m.Seq, 10)
	}
	return append(dst, '}'), nil
}

// MarshalJSON implements json.Marshaler with the protocol's encoding.
func (m Message) MarshalJSON() ([]byte, error) { return m.AppendJSON(nil) }

// UnmarshalJSON implements json.Unmarshaler; it rejects a stream-end object.
func (m *Message) UnmarshalJSON(b []byte) error {
	f, err := decodeJSON(b)
	if err != nil {
		return err
	}
	if f.end != nil {
		return f.end
	}
	*m = f.msg
	return nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString escapes quote and backslash with a backslash and bytes
// below 0x20 as \u00XX (as the server does); every other character, non-ASCII
// included, is written as its UTF-8 bytes.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			dst = append(dst, '\\', '"')
		case c == '\\':
			dst = append(dst, '\\', '\\')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// decodeJSON decodes one JSON payload. Keys are matched exactly; unknown keys
// are ignored (forward compatibility); "y" is required on a message.
func decodeJSON(b []byte) (frame, error) {
	if !utf8.Valid(b) {
		return frame{}, errors.New("invalid JSON: not UTF-8")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return frame{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if raw == nil {
		return frame{}, errNotObject
	}
	if r, ok := raw["error"]; ok {
		end := &StreamError{}
		if err := jsonString(r, &end.Reason); err != nil {
			return frame{}, fmt.Errorf("key error: %w", err)
		}
		if l, ok := raw["location"]; ok {
			if err := jsonString(l, &end.Location); err != nil {
				return frame{}, fmt.Errorf("key location: %w", err)
			}
		}
		return frame{end: end}, nil
	}
	var m Message
	y, ok := raw["y"]
	if !ok {
		return frame{}, errors.New("message without \"y\"")
	}
	n, err := strconv.ParseInt(string(y), 10, 32)
	if err != nil {
		return frame{}, fmt.Errorf("key y: not an integer: %s", y)
	}
	m.Type = MessageType(n)
	for key, dst := range map[string]*string{"f": &m.From, "t": &m.To, "u": &m.User, "c": &m.Channel, "b": &m.Body} {
		if r, ok := raw[key]; ok {
			if err := jsonString(r, dst); err != nil {
				return frame{}, fmt.Errorf("key %s: %w", key, err)
			}
		}
	}
	if s, ok := raw["s"]; ok {
		m.Seq, err = strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return frame{}, fmt.Errorf("key s: not an unsigned integer: %s", s)
		}
		m.HasSeq = true
	}
	return frame{msg: m}, nil
}

func jsonString(r json.RawMessage, dst *string) error {
	if len(r) == 0 || r[0] != '"' {
		return fmt.Errorf("not a string: %s", r)
	}
	return json.Unmarshal(r, dst)
}

// AppendMsgpack appends the MessagePack encoding of m to dst: a map with the
// same keys and order as AppendJSON, integers in their shortest form.
func (m Message) AppendMsgpack(dst []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return dst, err
	}
	type kv struct {
		k string
		v string
	}
	fields := make([]kv, 0, 5)
	for _, f := range [...]kv{{"f", m.From}, {"t", m.To}, {"c", m.Channel}, {"u", m.User}} {
		if f.v != "" {
			fields = append(fields, f)
		}
	}
	if m.hasBody() {
		fields = append(fields, kv{"b", m.Body})
	}
	n := 1 + len(fields)
	if m.HasSeq {
		n++
	}
	buf := bytes.NewBuffer(dst)
	enc := msgpack.NewEncoder(buf)
	must := func(err error) {
		if err != nil {
			panic(err) // a bytes.Buffer never fails
		}
	}
	must(enc.EncodeMapLen(n))
	must(enc.EncodeString("y"))
	must(enc.EncodeInt(int64(m.Type)))
	for _, f := range fields {
		must(enc.EncodeString(f.k))
		must(enc.EncodeString(f.v))
	}
	if m.HasSeq {
		must(enc.EncodeString("s"))
		must(enc.EncodeUint(m.Seq))
	}
	return buf.Bytes(), nil
}

// decodeMsgpack decodes one MessagePack payload: a map with string keys.
// Strings may be str or bin (bin must be UTF-8); integers any width.
func decodeMsgpack(b []byte) (f frame, err error) {
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	n, err := dec.DecodeMapLen()
	if err != nil {
		return frame{}, fmt.Errorf("invalid msgpack: %w", err)
	}
	if n < 0 {
		return frame{}, errNotObject
	}
	var m Message
	var end *StreamError
	var location string
	seenY := false
	for i := 0; i < n; i++ {
		key, err := dec.DecodeString()
		if err != nil {
			return frame{}, fmt.Errorf("invalid msgpack key: %w", err)
		}
		v, err := dec.DecodeInterface()
		if err != nil {
			return frame{}, fmt.Errorf("invalid msgpack value of %q: %w", key, err)
		}
		switch key {
		case "y":
			y, ok := mpInt(v)
			if !ok || y < -1<<31 || y > 1<<31-1 {
				return frame{}, fmt.Errorf("key y: not an integer: %v", v)
			}
			m.Type, seenY = MessageType(y), true
		case "s":
			s, ok := mpUint(v)
			if !ok {
				return frame{}, fmt.Errorf("key s: not an unsigned integer: %v", v)
			}
			m.Seq, m.HasSeq = s, true
		case "f", "t", "u", "c", "b", "error", "location":
			s, ok := mpString(v)
			if !ok {
				return frame{}, fmt.Errorf("key %s: not a string", key)
			}
			switch key {
			case "f":
				m.From = s
			case "t":
				m.To = s
			case "u":
				m.User = s
			case "c":
				m.Channel = s
			case "b":
				m.Body = s
			case "error":
				end = &StreamError{Reason: s}
			case "location":
				location = s
			}
		}
	}
	if r.Len() != 0 {
		return frame{}, fmt.Errorf("invalid msgpack: %d bytes after the map", r.Len())
	}
	if end != nil {
		end.Location = location
		return frame{end: end}, nil
	}
	if !seenY {
		return frame{}, errors.New("message without \"y\"")
	}
	return frame{msg: m}, nil
}

func mpInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x > 1<<63-1 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

func mpUint(v any) (uint64, bool) {
	if x, ok := v.(uint64); ok {
		return x, true
	}
	n, ok := mpInt(v)
	if !ok || n < 0 {
		return 0, false
	}
	return uint64(n), true
}

func mpString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, utf8.ValidString(x)
	case []byte:
		return string(x), utf8.Valid(x)
	}
	return "", false
}

// encode appends m in the codec's encoding.
func (c Codec) encode(dst []byte, m Message) ([]byte, error) {
	if c == MsgPack {
		return m.AppendMsgpack(dst)
	}
	return m.AppendJSON(dst)
}

// decode decodes one payload in the codec's encoding.
func (c Codec) decode(b []byte) (frame, error) {
	if c == MsgPack {
		return decodeMsgpack(b)
	}
	return decodeJSON(b)
}

// DecodeMessage decodes one payload (a chunk, a WebSocket message or an SSE
// data field) in the given codec. A stream-ending {"error":...} payload is
// returned as a *StreamError.
func DecodeMessage(c Codec, payload []byte) (Message, error) {
	f, err := c.decode(payload)
	if err != nil {
		return Message{}, err
	}
	if f.end != nil {
		return Message{}, f.end
	}
	return f.msg, nil
}

// EncodeMessage appends the encoding of m in the given codec to dst.
func EncodeMessage(c Codec, dst []byte, m Message) ([]byte, error) { return c.encode(dst, m) }
