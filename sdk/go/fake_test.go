package ipush

// fake_test.go: a tiny fake server that answers /connect with whatever bytes
// a test wants (malformed frames, move signals, silence), and the tests that
// need one.

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeServer struct {
	t       *testing.T
	ln      net.Listener
	url     string
	handler func(n int, fc *fakeConn)

	mu    sync.Mutex
	n     int
	reqs  []*http.Request
	conns []net.Conn
}

type fakeConn struct {
	net.Conn
	br   *bufio.Reader
	req  *http.Request
	kind Transport
}

// newFake starts a fake server; handler runs for each /connect (n counts
// them from 1); POST /send is answered ok.
func newFake(t *testing.T, handler func(n int, fc *fakeConn)) *fakeServer {
	return newFakeOn(t, handler, nil)
}

// newFakeOn is newFake over TLS when cfg is set (https:// URL).
func newFakeOn(t *testing.T, handler func(n int, fc *fakeConn), cfg *tls.Config) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http://"
	if cfg != nil {
		ln, scheme = tls.NewListener(ln, cfg), "https://"
	}
	f := &fakeServer{t: t, ln: ln, url: scheme + ln.Addr().String(), handler: handler}
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *fakeServer) accept() {
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, nc)
		f.mu.Unlock()
		go f.serve(nc)
	}
}

func (f *fakeServer) serve(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	fc := &fakeConn{Conn: nc, br: br, req: req, kind: Chunked}
	switch {
	case strings.EqualFold(req.Header.Get("Upgrade"), "websocket"):
		fc.kind = WebSocket
	case strings.Contains(req.Header.Get("Accept"), "text/event-stream"):
		fc.kind = SSE
	}
	if req.URL.Path == "/send" {
		io.Copy(io.Discard, req.Body)
		io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Type: text/json; charset=utf-8\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"result\":\"ok\"}")
		return
	}
	n := 0
	f.mu.Lock()
	if req.URL.Path == "/connect" {
		f.n++
		n = f.n
		f.reqs = append(f.reqs, req)
	}
	f.mu.Unlock()
	f.handler(n, fc)
}

func (f *fakeServer) close() {
	f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *fakeServer) connects() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *fakeServer) request(i int) *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqs[i]
}

// ok writes the success head of fc's transport.
func (fc *fakeConn) ok() {
	switch fc.kind {
	case WebSocket:
		sum := sha1.Sum([]byte(fc.req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(fc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
	case SSE:
		io.WriteString(fc, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")
	default:
		io.WriteString(fc, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n")
	}
}

// message writes one message in fc's transport (JSON, or MessagePack when the
// client asked for it).
func (fc *fakeConn) message(t *testing.T, m Message) {
	codec := JSON
	if fc.req.URL.Query().Get("codec") == "msgpack" {
		codec = MsgPack
	}
	payload, err := codec.encode(nil, m)
	if err != nil {
		t.Error(err)
	}
	switch fc.kind {
	case WebSocket:
		op := byte(0x1)
		if codec == MsgPack {
			op = 0x2
		}
		fc.Write(wsFrame(op, payload))
	case SSE:
		id := ""
		if m.HasSeq {
			id = fmt.Sprintf("id: %d\n", m.Seq)
		}
		fmt.Fprintf(fc, "%sdata: %s\n\n", id, payload)
	default:
		fc.Write(appendChunk(nil, payload))
	}
}

// hold keeps the connection until the client closes it (or the test ends),
// returning what the client sent.
func (fc *fakeConn) hold() []byte {
	b, _ := io.ReadAll(fc.br)
	return b
}

// wsFrame is an unmasked server frame.
func wsFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// readClientFrame reads one (masked) client frame.
func readClientFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(br, h[:]); err != nil {
		return
	}
	op = h[0] & 0x0f
	if h[1]&0x80 == 0 {
		return op, nil, errors.New("unmasked client frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		_, err = io.ReadFull(br, e[:])
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		_, err = io.ReadFull(br, e[:])
		n = binary.BigEndian.Uint64(e[:])
	}
	if err != nil {
		return
	}
	var mask [4]byte
	if _, err = io.ReadFull(br, mask[:]); err != nil {
		return
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(br, payload); err != nil {
		return
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return op, payload, nil
}

// clientCloseCode reads client frames until a close and returns its code.
func clientCloseCode(br *bufio.Reader) (int, error) {
	for {
		op, p, err := readClientFrame(br)
		if err != nil {
			return 0, err
		}
		if op == 0x8 {
			if len(p) < 2 {
				return 1005, nil
			}
			return int(binary.BigEndian.Uint16(p)), nil
		}
	}
}

// noSleep records backoff sleeps (and sleeps only 1 ms).
type noSleep struct {
	mu     sync.Mutex
	sleeps []time.Duration
}

func (s *noSleep) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.sleeps = append(s.sleeps, d)
	s.mu.Unlock()
	return sleepCtx(ctx, time.Millisecond)
}

func (s *noSleep) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sleeps)
}

// startFakeClient runs a client against base with a backoff recorder.
func startFakeClient(t *testing.T, base string, o Options) (*recClient, *noSleep) {
	t.Helper()
	r := newRecorder()
	if o.Password == "" {
		o.Password = "pw"
	}
	c, err := NewClient(base, "u1", r.hook(o))
	if err != nil {
		t.Fatal(err)
	}
	ns := &noSleep{}
	c.sleep = ns.sleep
	return &recClient{recorder: r, client: c, run: runClient(t, c)}, ns
}

var after = Message{Type: TypeUser, From: "op", To: "u1", Body: "after", Seq: 1, HasSeq: true}

// malformedCase is bad bytes sent after the success head of a transport.
type malformedCase struct {
	name      string
	tr        Transport
	raw       []byte
	closeCode int  // WebSocket: the close code the client must send
	lost      bool // a lost connection rather than malformed data
}

// TestMalformedFromServer: bad bytes from the server are an error event and a
// reconnect, never a crash or a hang; on WebSocket the client closes with the
// RFC 6455 code.
func TestMalformedFromServer(t *testing.T) {
	cases := []malformedCase{
		{name: "chunk-size-not-hex", tr: Chunked, raw: []byte("zz\r\n{}\r\n")},
		{name: "chunk-invalid-json", tr: Chunked, raw: []byte("5\r\nhello\r\n")},
		{name: "ws-invalid-json", tr: WebSocket, raw: wsFrame(1, []byte("hello")), closeCode: 1008},
		{name: "ws-invalid-msgpack", tr: WebSocket, raw: wsFrame(2, []byte{0xc1}), closeCode: 1008},
		{name: "sse-invalid-json", tr: SSE, raw: []byte("id: 1\ndata: hello\n\n")},
		{name: "sse-id-not-seq", tr: SSE, raw: []byte("id: 7\ndata: {\"y\":3,\"f\":\"a\",\"t\":\"u1\",\"b\":\"x\",\"s\":1}\n\n")},
	}
	// Plus every malformed input of the shared vectors.
	var chunked struct {
		Malformed []struct {
			Name     string `json:"name"`
			BytesHex string `json:"bytes_hex"`
		} `json:"malformed"`
	}
	var ws struct {
		Malformed []struct {
			Name            string `json:"name"`
			Hex             string `json:"hex"`
			ExpectCloseCode int    `json:"expect_close_code"`
		} `json:"malformed"`
	}
	if haveVectors(t) {
		loadVectors(t, "chunked.json", &chunked)
		loadVectors(t, "websocket.json", &ws)
	}
	for _, m := range chunked.Malformed {
		cases = append(cases, malformedCase{name: "vector-chunked-" + m.Name, tr: Chunked,
			raw: unhex(t, m.BytesHex), lost: strings.Contains(m.Name, "eof")})
	}
	for _, m := range ws.Malformed {
		cases = append(cases, malformedCase{name: "vector-ws-" + m.Name, tr: WebSocket,
			raw: unhex(t, m.Hex), closeCode: m.ExpectCloseCode})
	}
	for _, tc := range cases {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			closeCode := make(chan int, 1)
			f := newFake(t, func(n int, fc *fakeConn) {
				fc.ok()
				if n == 1 {
					fc.Write(tc.raw)
					if tc.tr == WebSocket {
						code, err := clientCloseCode(fc.br)
						if err != nil {
							code = -1
						}
						closeCode <- code
					}
					if tc.lost {
						return
					}
					fc.hold()
					return
				}
				fc.message(t, after)
				fc.hold()
			})
			r, _ := startFakeClient(t, f.url, Options{Transports: []Transport{tc.tr}})
			msgs := r.waitMessages(t, 1, 10*time.Second)
			if !reflect.DeepEqual(msgs, []Message{after}) {
				t.Fatalf("messages %+v", msgs)
			}
			evs := r.snapshot()
			var pe *ProtocolError
			gotErr := false
			for _, e := range evs {
				if e.kind == "error" && errors.As(e.err, &pe) {
					gotErr = true
				}
			}
			if gotErr == tc.lost {
				t.Fatalf("protocol error reported: %v, want %v; events:\n%s", gotErr, !tc.lost, dump(evs))
			}
			if r.count("connected") != 2 || f.connects() != 2 {
				t.Fatalf("want one reconnect; events:\n%s", dump(evs))
			}
			if tc.tr == WebSocket {
				select {
				case code := <-closeCode:
					if code != tc.closeCode {
						t.Fatalf("client closed with %d, want %d", code, tc.closeCode)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no close frame from the client")
				}
			}
		})
	}
}

// haveVectors: the shared vectors are there (in CI they must be).
func haveVectors(t *testing.T) bool {
	_, err := os.Stat(filepath.Join(repoRoot(t), "sdk", "vectors"))
	if err != nil && !inCI() {
		fmt.Printf("skipped: %s: the shared vectors' cases (no sdk/vectors)\n", t.Name())
	}
	return err == nil || inCI()
}

// TestMovedSignal: the move signal of each transport makes the client
// reconnect to the location at once (no backoff), with the same uid and
// credentials.
func TestMovedSignal(t *testing.T) {
	cases := []struct {
		tr    Transport
		codec Codec
	}{{Chunked, JSON}, {Chunked, MsgPack}, {WebSocket, JSON}, {WebSocket, MsgPack}, {SSE, JSON}}
	for _, tc := range cases {
		tc := tc
		t.Run(fmt.Sprintf("%s-%s", tc.tr, tc.codec), func(t *testing.T) {
			t.Parallel()
			b := newFake(t, func(n int, fc *fakeConn) {
				fc.ok()
				fc.message(t, after)
				fc.hold()
			})
			loc := b.url + "/connect?uid=u1&password=pw&extra=1"
			if tc.codec == MsgPack {
				loc += "&codec=msgpack"
			}
			a := newFake(t, func(n int, fc *fakeConn) {
				fc.ok()
				moved := fmt.Sprintf(`{"error":"moved","location":%q}`, loc)
				switch fc.kind {
				case WebSocket:
					fc.Write(wsFrame(0x8, append([]byte{0x03, 0xf4}, moved...))) // 1012
				case SSE:
					fmt.Fprintf(fc, "event: moved\ndata: %s\n\n", moved)
				default:
					var payload []byte
					if tc.codec == MsgPack {
						payload = msgpackMap(t, map[string]string{"error": "moved", "location": loc})
					} else {
						payload = []byte(moved)
					}
					fc.Write(appendChunk(nil, payload))
					io.WriteString(fc, "0\r\n\r\n")
				}
				fc.hold()
			})
			var tokens int
			var mu sync.Mutex
			r, ns := startFakeClient(t, a.url, Options{Transports: []Transport{tc.tr}, Codec: tc.codec,
				Token: func(context.Context) (string, error) {
					mu.Lock()
					defer mu.Unlock()
					tokens++
					return "tok", nil
				}})
			msgs := r.waitMessages(t, 1, 10*time.Second)
			if !reflect.DeepEqual(msgs, []Message{after}) {
				t.Fatalf("messages %+v", msgs)
			}
			evs := r.snapshot()
			var kinds []string
			for _, e := range evs {
				kinds = append(kinds, e.kind)
				if e.kind == "moved" && e.loc != loc {
					t.Fatalf("moved to %q, want %q", e.loc, loc)
				}
			}
			if want := []string{"connected", "moved", "disconnected", "connected", "message"}; !reflect.DeepEqual(kinds, want) {
				t.Fatalf("events %v, want %v:\n%s", kinds, want, dump(evs))
			}
			if evs[3].conn.URL != b.url {
				t.Fatalf("reconnected to %s, want %s", evs[3].conn.URL, b.url)
			}
			if ns.count() != 0 {
				t.Fatalf("backoff before following a move: %v", ns.sleeps)
			}
			q := b.request(0).URL.Query()
			wantCodec := ""
			if tc.codec == MsgPack {
				wantCodec = "msgpack"
			}
			if q.Get("uid") != "u1" || q.Get("password") != "tok" || q.Get("codec") != wantCodec || q.Get("extra") != "1" {
				t.Fatalf("request to the new node: %s", b.request(0).URL)
			}
			mu.Lock()
			defer mu.Unlock()
			if tokens != 2 {
				t.Fatalf("token callback called %d times, want 2 (each connect)", tokens)
			}
		})
	}
}

// msgpackMap encodes a map of strings (keys in sorted order is fine here).
func msgpackMap(t *testing.T, m map[string]string) []byte {
	b := []byte{0x80 | byte(len(m))}
	for _, k := range []string{"error", "location"} {
		v, ok := m[k]
		if !ok {
			continue
		}
		for _, s := range []string{k, v} {
			if len(s) < 32 {
				b = append(b, 0xa0|byte(len(s)))
			} else {
				b = append(b, 0xd9, byte(len(s)))
			}
			b = append(b, s...)
		}
	}
	return b
}

// TestHeartbeatTimeout: the client sends {"y":0} when idle and gives up on a
// server that stays silent for 3 intervals.
func TestHeartbeatTimeout(t *testing.T) {
	for _, tr := range []Transport{Chunked, WebSocket, SSE} {
		tr := tr
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			sent := make(chan []byte, 4)
			f := newFake(t, func(n int, fc *fakeConn) {
				fc.ok()
				if n == 1 {
					sent <- fc.hold() // say nothing
					return
				}
				fc.message(t, after)
				fc.hold()
			})
			start := time.Now()
			r, _ := startFakeClient(t, f.url, Options{Transports: []Transport{tr}, HeartbeatInterval: 100 * time.Millisecond})
			r.waitMessages(t, 1, 10*time.Second)
			if d := time.Since(start); d < 300*time.Millisecond {
				t.Fatalf("gave up after %v, before 3 intervals", d)
			}
			var reason error
			for _, e := range r.snapshot() {
				if e.kind == "disconnected" {
					reason = e.err
					break
				}
			}
			if reason != ErrHeartbeatTimeout {
				t.Fatalf("disconnect reason %v, want ErrHeartbeatTimeout", reason)
			}
			got := <-sent
			switch tr {
			case Chunked:
				if !strings.HasPrefix(string(got), "7\r\n{\"y\":0}\r\n") {
					t.Fatalf("client sent %q, want heartbeat chunks", got)
				}
			case WebSocket:
				op, p, err := readClientFrame(bufio.NewReader(strings.NewReader(string(got))))
				if err != nil || op != 1 || string(p) != `{"y":0}` {
					t.Fatalf("client sent %q (%v), want a heartbeat text frame", got, err)
				}
			case SSE:
				if len(got) != 0 {
					t.Fatalf("client sent %q on a one-way stream", got)
				}
			}
		})
	}
}

// TestFallback: when the WebSocket upgrade (and SSE) does not get through,
// the client falls back to the next transport of its list.
func TestFallback(t *testing.T) {
	f := newFake(t, func(n int, fc *fakeConn) {
		switch {
		case fc.kind == WebSocket:
			// A proxy that does not do WebSocket.
			io.WriteString(fc, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nBad Request")
		case fc.kind == SSE && fc.req.URL.Query().Get("uid") == "u1":
			fc.ok()
			fc.message(t, after)
			fc.hold()
		case fc.kind == SSE:
			// A server or proxy that ignores Accept: text/event-stream.
			io.WriteString(fc, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi")
		default:
			fc.ok()
			fc.message(t, after)
			fc.hold()
		}
	})
	for _, tc := range []struct {
		uid  string
		want Transport
	}{{"u1", SSE}, {"u2", Chunked}} {
		r := newRecorder()
		c, err := NewClient(f.url, tc.uid, r.hook(Options{Password: "pw", Transports: Fallback}))
		if err != nil {
			t.Fatal(err)
		}
		runClient(t, c)
		evs := r.waitKind(t, "connected", 1, 10*time.Second)
		for _, e := range evs {
			if e.kind == "connected" && e.conn.Transport != tc.want {
				t.Fatalf("%s: connected over %s, want %s", tc.uid, e.conn.Transport, tc.want)
			}
			var ue *unavailableError
			if e.kind == "error" && !errors.As(e.err, &ue) {
				t.Fatalf("%s: error %v", tc.uid, e.err)
			}
		}
		r.waitMessages(t, 1, 10*time.Second)
	}
}

// TestDuplicatesDropped: a message with a seq at or below the highest seen
// is dropped; messages without a seq pass.
func TestDuplicatesDropped(t *testing.T) {
	m := func(seq uint64, body string) Message {
		return Message{Type: TypeUser, From: "op", To: "u1", Body: body, Seq: seq, HasSeq: seq > 0}
	}
	stream := []Message{m(1, "a"), m(2, "b"), m(2, "b again"), m(1, "a again"), m(0, "live"), m(3, "c")}
	f := newFake(t, func(n int, fc *fakeConn) {
		fc.ok()
		for _, x := range stream {
			fc.message(t, x)
		}
		fc.hold()
	})
	for _, tc := range []struct {
		last uint64
		want []Message
	}{
		{0, []Message{m(1, "a"), m(2, "b"), m(0, "live"), m(3, "c")}},
		{2, []Message{m(0, "live"), m(3, "c")}},
	} {
		r, _ := startFakeClient(t, f.url, Options{Transports: []Transport{Chunked}, LastSeq: tc.last})
		r.waitMessages(t, len(tc.want), 10*time.Second)
		time.Sleep(100 * time.Millisecond) // a duplicate would arrive right behind
		if got := r.messages(); !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("LastSeq %d: delivered %+v, want %+v", tc.last, got, tc.want)
		}
		if r.client.LastSeq() != 3 {
			t.Fatalf("LastSeq() = %d", r.client.LastSeq())
		}
		r.client.Close()
		r.run.wait(t, 5*time.Second)
	}
}

// TestConnectURL: the connect URL keeps a path prefix, and locations give the
// node.
func TestConnectURL(t *testing.T) {
	c, err := NewClient("http://example.com:9000/push/", "a b", Options{Password: "p&q", Codec: MsgPack})
	if err != nil {
		t.Fatal(err)
	}
	p := &dialParams{node: c.base, uid: c.uid, token: "p&q", codec: MsgPack, opts: &c.opts}
	if got, want := p.connectURL().String(), "http://example.com:9000/push/connect?codec=msgpack&password=p%26q&uid=a+b"; got != want {
		t.Fatalf("connect URL %s, want %s", got, want)
	}
	if got, want := p.sendURL(), "http://example.com:9000/push/send?codec=msgpack&password=p%26q&uid=a+b"; got != want {
		t.Fatalf("send URL %s, want %s", got, want)
	}
	node, extra, err := nodeOf(p.connectURL(), "ws://10.0.0.2:9100/connect?uid=x&password=y&slot=7")
	if err != nil || node.String() != "http://10.0.0.2:9100" || !reflect.DeepEqual(extra, url.Values{"slot": {"7"}}) {
		t.Fatalf("nodeOf: %v %v %v", node, extra, err)
	}
	if _, _, err := nodeOf(p.connectURL(), "ftp://x/connect"); err == nil {
		t.Fatal("ftp location accepted")
	}
	for _, bad := range []struct {
		base, uid string
		o         Options
	}{
		{"ftp://h", "u", Options{Password: "p"}},
		{"http://h", "", Options{Password: "p"}},
		{"http://h", "u", Options{}},
		{"http://h", "u", Options{Password: "p", Codec: "xml"}},
		{"http://h", "u", Options{Password: "p", Codec: MsgPack, Transports: []Transport{SSE}}},
		{"http://h", "u", Options{Password: "p", Transports: []Transport{"carrier-pigeon"}}},
	} {
		if _, err := NewClient(bad.base, bad.uid, bad.o); err == nil {
			t.Fatalf("NewClient(%q, %q, %+v) accepted", bad.base, bad.uid, bad.o)
		}
	}
}

// TestHeartbeatAnswered: a heartbeat from the server is answered once; the
// server's answer to that is not answered again.
func TestHeartbeatAnswered(t *testing.T) {
	for _, tr := range []Transport{Chunked, WebSocket} {
		tr := tr
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			got := make(chan string, 8)
			f := newFake(t, func(n int, fc *fakeConn) {
				fc.ok()
				fc.message(t, Message{Type: TypeHeartbeat}) // the server's probe
				read := func() string {
					if tr == WebSocket {
						_, p, err := readClientFrame(fc.br)
						if err != nil {
							return "error: " + err.Error()
						}
						return string(p)
					}
					line, _ := fc.br.ReadString('\n')
					data, _ := fc.br.ReadString('\n')
					return strings.TrimSpace(line) + " " + strings.TrimSpace(data)
				}
				got <- read()
				fc.message(t, Message{Type: TypeHeartbeat}) // the answer to the client's answer
				fc.message(t, after)
				got <- read() // anything more the client sends (nothing until it closes)
			})
			r, _ := startFakeClient(t, f.url, Options{Transports: []Transport{tr}, HeartbeatInterval: time.Minute})
			want := `{"y":0}`
			if tr == Chunked {
				want = `7 {"y":0}`
			}
			select {
			case s := <-got:
				if s != want {
					t.Fatalf("client answered %q, want %q", s, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the server's heartbeat was not answered")
			}
			r.waitMessages(t, 1, 5*time.Second)
			select {
			case s := <-got:
				t.Fatalf("the client answered the answer: %q", s)
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}

// TestMoveLoopBacksOff: a node that keeps moving the client to itself gets
// maxMoves immediate reconnects, then backoff.
func TestMoveLoopBacksOff(t *testing.T) {
	f := newFake(t, func(n int, fc *fakeConn) {
		fc.ok()
		fc.Write(appendChunk(nil, []byte(fmt.Sprintf(`{"error":"moved","location":"http://%s/connect"}`, fc.req.Host))))
		io.WriteString(fc, "0\r\n\r\n")
		fc.hold()
	})
	r, ns := startFakeClient(t, f.url, Options{Transports: []Transport{Chunked}})
	r.waitFor(t, "a backoff", 10*time.Second, func([]ev) bool { return ns.count() > 0 })
	if n := f.connects(); n < maxMoves+1 {
		t.Fatalf("backoff after %d connects, want %d immediate moves first", n, maxMoves)
	}
	if moved := r.count("moved"); moved < maxMoves+1 {
		t.Fatalf("%d moved events", moved)
	}
}

// TestTLS: https:// base URLs work on every transport (the WebSocket frame
// tracker sits above TLS, on the plaintext).
func TestTLS(t *testing.T) {
	certs := httptest.NewTLSServer(http.NotFoundHandler()) // only for its certificate
	defer certs.Close()
	hc := certs.Client()
	f := newFakeOn(t, func(n int, fc *fakeConn) {
		fc.ok()
		fc.message(t, after)
		if fc.kind == WebSocket {
			fc.Write([]byte{0x88, 0x01, 0x03}) // a 1-byte close: refused by the tracker
		}
		fc.hold()
	}, &tls.Config{Certificates: certs.TLS.Certificates})
	for _, tr := range []Transport{WebSocket, SSE, Chunked} {
		t.Run(string(tr), func(t *testing.T) {
			r, _ := startFakeClient(t, f.url, Options{Transports: []Transport{tr}, HTTPClient: hc,
				TLSConfig: hc.Transport.(*http.Transport).TLSClientConfig})
			if m := r.waitMessages(t, 1, 10*time.Second); !reflect.DeepEqual(m[0], after) {
				t.Fatalf("got %+v", m)
			}
			if tr == WebSocket {
				r.waitFor(t, "the protocol error", 10*time.Second, func(evs []ev) bool {
					for _, e := range evs {
						var pe *ProtocolError
						if e.kind == "error" && errors.As(e.err, &pe) {
							return true
						}
					}
					return false
				})
			}
		})
	}
}
