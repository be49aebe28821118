package ipush

// vectors_test.go: the shared test vectors of sdk/vectors (repo-relative),
// decoded and re-encoded by this SDK.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// loadVectors decodes sdk/vectors/<name> into v (numbers kept exact).
// Missing vectors fail in CI and are "skipped" elsewhere.
func loadVectors(t *testing.T, name string, v any) {
	t.Helper()
	p := filepath.Join(repoRoot(t), "sdk", "vectors", name)
	data, err := os.ReadFile(p)
	if err != nil {
		if inCI() {
			t.Fatalf("vectors missing: %v", err)
		}
		fmt.Printf("skipped: %s: no %s\n", t.Name(), p)
		t.Skip("vectors missing")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// valueOf is the vectors' JSON-object view of a frame.
func valueOf(f frame) map[string]any {
	v := map[string]any{}
	if f.end != nil {
		v["error"] = f.end.Reason
		if f.end.Location != "" {
			v["location"] = f.end.Location
		}
		return v
	}
	m := f.msg
	v["y"] = json.Number(strconv.Itoa(int(m.Type)))
	for k, s := range map[string]string{"f": m.From, "t": m.To, "u": m.User, "c": m.Channel} {
		if s != "" {
			v[k] = s
		}
	}
	if m.hasBody() {
		v["b"] = m.Body
	}
	if m.HasSeq {
		v["s"] = json.Number(strconv.FormatUint(m.Seq, 10))
	}
	return v
}

// messageOf builds a Message from a vector value.
func messageOf(t *testing.T, v map[string]any) Message {
	t.Helper()
	var m Message
	for k, x := range v {
		switch k {
		case "y":
			n, err := strconv.Atoi(string(x.(json.Number)))
			if err != nil {
				t.Fatal(err)
			}
			m.Type = MessageType(n)
		case "s":
			n, err := strconv.ParseUint(string(x.(json.Number)), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			m.Seq, m.HasSeq = n, true
		case "f":
			m.From = x.(string)
		case "t":
			m.To = x.(string)
		case "u":
			m.User = x.(string)
		case "c":
			m.Channel = x.(string)
		case "b":
			m.Body = x.(string)
		default:
			t.Fatalf("unknown key %q in vector value", k)
		}
	}
	return m
}

func decodeValue(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return v
}

func TestVectorMessages(t *testing.T) {
	var file struct {
		Messages []struct {
			Name       string         `json:"name"`
			Direction  string         `json:"direction"`
			Value      map[string]any `json:"value"`
			JSONText   string         `json:"json_text"`
			MsgpackHex string         `json:"msgpack_hex"`
		} `json:"messages"`
	}
	loadVectors(t, "messages.json", &file)
	if len(file.Messages) == 0 {
		t.Fatal("no message vectors")
	}
	for _, vec := range file.Messages {
		t.Run(vec.Name, func(t *testing.T) {
			mp := unhex(t, vec.MsgpackHex)
			// Decoders: both encodings give the value.
			fj, err := decodeJSON([]byte(vec.JSONText))
			if err != nil {
				t.Fatalf("decode json: %v", err)
			}
			if got := valueOf(fj); !reflect.DeepEqual(got, vec.Value) {
				t.Fatalf("json decodes to %v, want %v", got, vec.Value)
			}
			fm, err := decodeMsgpack(mp)
			if err != nil {
				t.Fatalf("decode msgpack: %v", err)
			}
			if !reflect.DeepEqual(fm, fj) {
				t.Fatalf("msgpack decodes to %+v, json to %+v", fm, fj)
			}
			// Encoders: the value back, and the very bytes of the vector
			// (the server's canonical form, which this encoder follows).
			m := messageOf(t, vec.Value)
			j, err := m.AppendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := decodeValue(t, j); !reflect.DeepEqual(got, vec.Value) {
				t.Fatalf("json encoding %s is %v, want %v", j, got, vec.Value)
			}
			if string(j) != vec.JSONText {
				t.Fatalf("json encoding\n got %s\nwant %s", j, vec.JSONText)
			}
			b, err := m.AppendMsgpack(nil)
			if err != nil {
				t.Fatal(err)
			}
			if f, err := decodeMsgpack(b); err != nil || !reflect.DeepEqual(valueOf(f), vec.Value) {
				t.Fatalf("msgpack encoding %x decodes to %+v, %v", b, f, err)
			}
			if !bytes.Equal(b, mp) {
				t.Fatalf("msgpack encoding\n got %x\nwant %x", b, mp)
			}
		})
	}
}

// fragmentReader returns its input in pieces: first `first` bytes, then the
// rest one read at a time of at most `step` bytes.
type fragmentReader struct {
	b     []byte
	first int
	step  int
	n     int
}

func (r *fragmentReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := r.step
	if r.n == 0 {
		k = r.first
	}
	r.n++
	if k <= 0 {
		k = 1
	}
	if k > len(r.b) {
		k = len(r.b)
	}
	if k > len(p) {
		k = len(p)
	}
	copy(p, r.b[:k])
	r.b = r.b[k:]
	return k, nil
}

// readChunked reads a chunked stream through chunkedConn until it ends.
func readChunked(in io.Reader, codec Codec) ([]frame, error) {
	c := &chunkedConn{br: bufio.NewReaderSize(in, 16), codec: codec, max: 1 << 20}
	var out []frame
	for {
		m, err := c.read()
		var se *StreamError
		if errors.As(err, &se) {
			out = append(out, frame{end: se})
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, frame{msg: m})
	}
}

func TestVectorChunked(t *testing.T) {
	var file struct {
		Streams []struct {
			Name     string           `json:"name"`
			Codec    string           `json:"codec"`
			BytesHex string           `json:"bytes_hex"`
			Messages []map[string]any `json:"messages"`
			End      string           `json:"end"`
			Error    *string          `json:"error"`
		} `json:"streams"`
		Malformed []struct {
			Name     string `json:"name"`
			BytesHex string `json:"bytes_hex"`
			Why      string `json:"why"`
		} `json:"malformed"`
	}
	loadVectors(t, "chunked.json", &file)
	if len(file.Streams) == 0 || len(file.Malformed) == 0 {
		t.Fatal("no chunked vectors")
	}
	for _, vec := range file.Streams {
		t.Run(vec.Name, func(t *testing.T) {
			raw := unhex(t, vec.BytesHex)
			codec := Codec(vec.Codec)
			// Every split of the input in two, and a byte at a time.
			type piece struct{ first, step int }
			pieces := []piece{{1, 1}}
			for split := 0; split <= len(raw); split++ {
				pieces = append(pieces, piece{split, len(raw)})
			}
			for _, pc := range pieces {
				frames, err := readChunked(&fragmentReader{b: raw, first: pc.first, step: pc.step}, codec)
				if err != errCleanEnd {
					t.Fatalf("pieces %v: stream ended with %v, want the last chunk", pc, err)
				}
				var got []map[string]any
				for _, f := range frames {
					got = append(got, valueOf(f))
				}
				if !reflect.DeepEqual(got, vec.Messages) {
					t.Fatalf("pieces %v: messages %v, want %v", pc, got, vec.Messages)
				}
				last := frames[len(frames)-1]
				switch vec.End {
				case "clean":
					if last.end != nil {
						t.Fatalf("clean end, but the last message is %v", last.end)
					}
				case "error":
					if last.end == nil || vec.Error == nil || last.end.Reason != *vec.Error {
						t.Fatalf("end %+v, want error %v", last.end, vec.Error)
					}
				default:
					t.Fatalf("unknown end %q", vec.End)
				}
			}
		})
	}
	for _, vec := range file.Malformed {
		t.Run("malformed/"+vec.Name, func(t *testing.T) {
			raw := unhex(t, vec.BytesHex)
			for split := 1; split <= len(raw); split++ {
				frames, err := readChunked(&fragmentReader{b: raw, first: split, step: len(raw)}, JSON)
				var pe *ProtocolError
				switch {
				case err == errCleanEnd:
					t.Fatalf("split %d: accepted as a clean end (%s)", split, vec.Why)
				case errors.As(err, &pe):
				case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
					// The input ends inside a chunk: a lost connection, not a
					// clean end (a well-formed prefix may have been read).
				default:
					t.Fatalf("split %d: unexpected error %v", split, err)
				}
				if strings.Contains(vec.Name, "eof") && pe != nil {
					t.Fatalf("a truncated stream is a lost connection, not %v", pe)
				}
				if !strings.Contains(vec.Name, "eof") && pe == nil {
					t.Fatalf("split %d: not reported as malformed (%s): frames %+v, err %v", split, vec.Why, frames, err)
				}
			}
		})
	}
}

func TestVectorSSE(t *testing.T) {
	var file struct {
		Streams []struct {
			Name           string            `json:"name"`
			RequestHeaders map[string]string `json:"request_headers"`
			Text           string            `json:"text"`
			Events         []struct {
				ID    *string `json:"id"`
				Event *string `json:"event"`
				Data  string  `json:"data"`
			} `json:"events"`
		} `json:"streams"`
	}
	loadVectors(t, "sse.json", &file)
	if len(file.Streams) == 0 {
		t.Fatal("no SSE vectors")
	}
	for _, vec := range file.Streams {
		t.Run(vec.Name, func(t *testing.T) {
			var want []sseEvent
			for _, e := range vec.Events {
				ev := sseEvent{Data: e.Data}
				if e.ID != nil {
					ev.ID, ev.HasID = *e.ID, true
				}
				if e.Event != nil {
					ev.Event = *e.Event
				}
				want = append(want, ev)
			}
			raw := []byte(vec.Text)
			// The parser fed in two pieces at every split, and with CRLF and CR
			// line ends.
			variants := map[string][]byte{
				"lf":   raw,
				"crlf": bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n")),
				"cr":   bytes.ReplaceAll(raw, []byte("\n"), []byte("\r")),
			}
			for name, in := range variants {
				for split := 0; split <= len(in); split++ {
					p := sseParser{max: 1 << 20}
					a, err := p.feed(in[:split])
					if err != nil {
						t.Fatal(err)
					}
					b, err := p.feed(in[split:])
					if err != nil {
						t.Fatal(err)
					}
					if got := append(a, b...); !reflect.DeepEqual(got, want) {
						t.Fatalf("%s split %d: events %+v, want %+v", name, split, got, want)
					}
				}
			}
			// Through the transport: messages, then the stream's end.
			c := &sseConn{body: io.NopCloser(&fragmentReader{b: raw, first: 3, step: 7}), cancel: func() {}, buf: make([]byte, 64)}
			c.parser.max = 1 << 20
			var n int
			for {
				m, err := c.read()
				if err != nil {
					var se *StreamError
					switch {
					case err == errCleanEnd:
						if strings.Contains(vec.Name, "moved") || strings.Contains(vec.Name, "replaced") {
							t.Fatalf("ended cleanly before the %s signal", vec.Name)
						}
					case errors.As(err, &se):
						if strings.Contains(vec.Name, "moved") && (se.Reason != "moved" || !strings.HasPrefix(se.Location, "http://")) {
							t.Fatalf("moved signal read as %+v", se)
						}
						if strings.Contains(vec.Name, "replaced") && se.Reason != "replaced" {
							t.Fatalf("replaced signal read as %+v", se)
						}
					default:
						t.Fatalf("read: %v", err)
					}
					break
				}
				n++
				if m.HasSeq && m.Seq == 0 {
					t.Fatalf("bad message %+v", m)
				}
			}
			nmsgs := 0
			for _, e := range want {
				if !strings.Contains(e.Data, `"error"`) && e.Data != `{"y":0}` {
					nmsgs++
				}
			}
			if heartbeats := strings.Count(vec.Text, `data: {"y":0}`); n != nmsgs+heartbeats {
				t.Fatalf("%d messages read, want %d", n, nmsgs+heartbeats)
			}
		})
	}
}

func TestVectorErrors(t *testing.T) {
	var file struct {
		HTTP []struct {
			Name     string `json:"name"`
			Request  string `json:"request"`
			Status   int    `json:"status"`
			BodyText string `json:"body_text"`
			Location string `json:"location"`
		} `json:"http"`
		Stream []struct {
			Name       string `json:"name"`
			JSONText   string `json:"json_text"`
			MsgpackHex string `json:"msgpack_hex"`
		} `json:"stream"`
	}
	loadVectors(t, "errors.json", &file)
	if len(file.HTTP) == 0 || len(file.Stream) == 0 {
		t.Fatal("no error vectors")
	}
	for _, vec := range file.Stream {
		t.Run("stream/"+vec.Name, func(t *testing.T) {
			var want struct {
				Error    string `json:"error"`
				Location string `json:"location"`
			}
			if err := json.Unmarshal([]byte(vec.JSONText), &want); err != nil || want.Error == "" {
				t.Fatalf("vector %q: %v", vec.JSONText, err)
			}
			for codec, payload := range map[Codec][]byte{JSON: []byte(vec.JSONText), MsgPack: unhex(t, vec.MsgpackHex)} {
				_, err := DecodeMessage(codec, payload)
				var se *StreamError
				if !errors.As(err, &se) || se.Reason != want.Error || se.Location != want.Location {
					t.Fatalf("%s: decoded as %v, want %+v", codec, err, want)
				}
			}
		})
	}
	for _, vec := range file.HTTP {
		if !strings.HasPrefix(vec.Request, "GET /connect") {
			continue // /send and other paths: not a connect
		}
		t.Run("http/"+vec.Name, func(t *testing.T) {
			h := http.Header{"Content-Type": {"text/json; charset=utf-8"}}
			if vec.Location != "" {
				h.Set("Location", vec.Location)
			}
			resp := &http.Response{StatusCode: vec.Status, Status: strconv.Itoa(vec.Status), Header: h,
				Body: io.NopCloser(strings.NewReader(vec.BodyText))}
			tr := Chunked
			if strings.Contains(vec.Request, "Upgrade: websocket") {
				tr = WebSocket
			}
			err := errorForStatus(tr, resp)
			var re *redirectError
			var ae *APIError
			var ue *unavailableError
			switch {
			case vec.Status == 303:
				if !errors.As(err, &re) || re.location != vec.Location {
					t.Fatalf("303: %v", err)
				}
			case vec.Status == 400 || vec.Status == 401 || vec.Status == 503:
				if !errors.As(err, &ae) || errors.As(err, &ue) || ae.Status != vec.Status || ae.Reason != reasonOf([]byte(vec.BodyText), "") {
					t.Fatalf("%d: %v", vec.Status, err)
				}
				c := &Client{}
				if fatal := c.fatal(err); fatal != (vec.Status != 503) {
					t.Fatalf("%d: fatal=%v", vec.Status, fatal)
				}
			default:
				// Not an ipush refusal of this uid: the next transport may do.
				if !errors.As(err, &ue) || !errors.As(err, &ae) || ae.Status != vec.Status {
					t.Fatalf("%d: %v", vec.Status, err)
				}
			}
		})
	}
}

type wsVector struct {
	Name        string  `json:"name"`
	Direction   string  `json:"direction"`
	Hex         string  `json:"hex"`
	Opcode      int     `json:"opcode"`
	PayloadHex  string  `json:"payload_hex"`
	CloseCode   *int    `json:"close_code"`
	CloseReason *string `json:"close_reason"`
}

// TestVectorWebSocket: the server's frames, written by a fake server after
// the handshake, are read by the client's WebSocket transport; the client's
// frames carry the vectors' payloads.
func TestVectorWebSocket(t *testing.T) {
	var file struct {
		Frames []wsVector `json:"frames"`
	}
	loadVectors(t, "websocket.json", &file)
	var server, client []wsVector
	for _, f := range file.Frames {
		if f.Direction == "server_to_client" {
			server = append(server, f)
		} else {
			client = append(client, f)
		}
	}
	if len(server) == 0 || len(client) == 0 {
		t.Fatal("no WebSocket vectors")
	}
	// Each server frame on its own connection, followed by a close 1001
	// unless it is a close itself.
	for _, vec := range server {
		vec := vec
		t.Run("server/"+vec.Name, func(t *testing.T) {
			raw := unhex(t, vec.Hex)
			f := newFake(t, func(n int, fc *fakeConn) {
				fc.ok()
				fc.Write(raw)
				if vec.Opcode != 8 {
					fc.Write([]byte{0x88, 0x02, 0x03, 0xe9})
				}
				fc.hold()
			})
			c, err := NewClient(f.url, "u1", Options{Password: "pw"})
			if err != nil {
				t.Fatal(err)
			}
			p := &dialParams{node: c.base, uid: "u1", token: "pw", codec: JSON, opts: &c.opts}
			conn, err := dialWebSocket(ctxT(t), p)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.close()
			var got []Message
			var end error
			for {
				m, err := conn.read()
				if err != nil {
					end = err
					break
				}
				got = append(got, m)
			}
			payload := unhex(t, vec.PayloadHex)
			switch vec.Opcode {
			case 1, 2:
				f, err := JSON.decode(payload)
				if vec.Opcode == 2 {
					f, err = MsgPack.decode(payload)
				}
				if err != nil {
					t.Fatal(err)
				}
				if f.end != nil {
					if se, ok := end.(*StreamError); !ok || *se != *f.end {
						t.Fatalf("stream end %v, want %+v", end, f.end)
					}
					return
				}
				if !reflect.DeepEqual(got, []Message{f.msg}) || end != errCleanEnd {
					t.Fatalf("read %+v then %v, want %+v then a clean end", got, end, f.msg)
				}
			case 9, 10: // ping / pong: nothing for the application
				if len(got) != 0 || end != errCleanEnd {
					t.Fatalf("read %+v then %v", got, end)
				}
			case 8:
				if len(got) != 0 {
					t.Fatalf("messages before the close: %+v", got)
				}
				var se *StreamError
				switch code := *vec.CloseCode; {
				case code == 1012:
					if !errors.As(end, &se) || se.Reason != "moved" || se.Location == "" {
						t.Fatalf("close 1012 read as %v", end)
					}
				case code == 1000 || code == 1001:
					if end != errCleanEnd {
						t.Fatalf("close %d read as %v", code, end)
					}
				default:
					if end == errCleanEnd || end == nil || !strings.Contains(end.Error(), strconv.Itoa(code)) {
						t.Fatalf("close %d read as %v", code, end)
					}
				}
			default:
				t.Fatalf("unexpected opcode %d", vec.Opcode)
			}
		})
	}
	// The client's data frames: same opcode and payload (the mask is random).
	for _, vec := range client {
		vec := vec
		if vec.Opcode != 1 && vec.Opcode != 2 {
			continue // fragments and control frames are the library's
		}
		payload := unhex(t, vec.PayloadHex)
		codec := JSON
		if vec.Opcode == 2 {
			codec = MsgPack
		}
		m, err := DecodeMessage(codec, payload)
		if err != nil {
			continue // a fragment's first half
		}
		t.Run("client/"+vec.Name, func(t *testing.T) {
			frames := make(chan []byte, 1)
			f := newFake(t, func(n int, fc *fakeConn) {
				fc.ok()
				op, p, err := readClientFrame(fc.br)
				if err != nil {
					t.Error(err)
				}
				frames <- append([]byte{op}, p...)
				fc.hold()
			})
			c, err := NewClient(f.url, "u1", Options{Password: "pw", Codec: codec})
			if err != nil {
				t.Fatal(err)
			}
			p := &dialParams{node: c.base, uid: "u1", token: "pw", codec: codec, opts: &c.opts}
			conn, err := dialWebSocket(ctxT(t), p)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.close()
			if err := conn.send(ctxT(t), m); err != nil {
				t.Fatal(err)
			}
			got := <-frames
			if int(got[0]) != vec.Opcode || !bytes.Equal(got[1:], payload) {
				t.Fatalf("client frame opcode %d payload %x, want %d %x", got[0], got[1:], vec.Opcode, payload)
			}
		})
	}
}
