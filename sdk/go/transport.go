package ipush

// transport.go owns the three stream transports (WebSocket, SSE, chunked
// stream) behind one interface. A streamConn is read by one goroutine (the
// client's reader) and written by any goroutine (sends are serialised inside).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Transport names a stream transport.
type Transport string

// The transports of the protocol.
const (
	WebSocket Transport = "websocket" // RFC 6455, both directions (the default)
	SSE       Transport = "sse"       // Server-Sent Events; sends go through POST /send; JSON only
	Chunked   Transport = "chunked"   // the chunked HTTP "comet" stream, both directions
)

// Fallback is the ordered transport list WebSocket, then SSE, then the chunked
// stream: a transport that the server or a proxy does not upgrade makes the
// client try the next one.
var Fallback = []Transport{WebSocket, SSE, Chunked}

// Codec names a message encoding.
type Codec string

// The codecs of the protocol.
const (
	JSON    Codec = "json"
	MsgPack Codec = "msgpack" // &codec=msgpack; not on SSE
)

// errCleanEnd is the end of a stream without an error signal (the server's
// last chunk, a WebSocket close without a reason, or the end of the body).
var errCleanEnd = errors.New("ipush: the server ended the stream")

type streamConn interface {
	transport() Transport
	// read blocks until the next message or stream end. A *StreamError, a
	// *ProtocolError, errCleanEnd or an I/O error ends the stream.
	read() (Message, error)
	send(ctx context.Context, m Message) error
	close()
	// lastRead is when bytes last arrived (unix nanoseconds).
	lastRead() int64
}

// dialParams is what one connect attempt needs.
type dialParams struct {
	node    *url.URL   // scheme, host and path prefix of the node
	extra   url.Values // query parameters taken from a 303/moved location
	uid     string
	token   string
	codec   Codec
	lastSeq uint64
	opts    *Options
}

// connectURL is the http(s) URL of /connect for these parameters.
func (p *dialParams) connectURL() *url.URL {
	u := *p.node
	path := strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(path, "/connect") {
		path += "/connect"
	}
	u.Path, u.RawPath = path, ""
	q := url.Values{}
	for k, v := range p.extra {
		q[k] = v
	}
	q.Set("uid", p.uid)
	q.Set("password", p.token)
	if p.codec == MsgPack {
		q.Set("codec", "msgpack")
	} else {
		q.Del("codec")
	}
	u.RawQuery = q.Encode()
	u.Fragment = ""
	return &u
}

// sendURL is the http(s) URL of POST /send.
func (p *dialParams) sendURL() string {
	u := p.connectURL()
	u.Path = strings.TrimSuffix(u.Path, "/connect") + "/send"
	return u.String()
}

// nodeOf turns a Location (absolute or relative to base) into the node part
// and the extra query parameters it carries.
func nodeOf(base *url.URL, location string) (*url.URL, url.Values, error) {
	l, err := base.Parse(location)
	if err != nil {
		return nil, nil, fmt.Errorf("ipush: bad location %q: %w", location, err)
	}
	switch l.Scheme {
	case "ws":
		l.Scheme = "http"
	case "wss":
		l.Scheme = "https"
	case "http", "https":
	default:
		return nil, nil, fmt.Errorf("ipush: bad location %q: scheme %q", location, l.Scheme)
	}
	if l.Host == "" {
		return nil, nil, fmt.Errorf("ipush: bad location %q: no host", location)
	}
	extra := l.Query()
	for _, k := range [...]string{"uid", "password", "codec"} {
		extra.Del(k)
	}
	node := &url.URL{Scheme: l.Scheme, Host: l.Host, Path: strings.TrimSuffix(l.Path, "/connect")}
	return node, extra, nil
}

// activity records when bytes last arrived.
type activity struct{ t atomic.Int64 }

func (a *activity) touch()          { a.t.Store(time.Now().UnixNano()) }
func (a *activity) lastRead() int64 { return a.t.Load() }

// errorForStatus classifies a non-success answer to a connect.
func errorForStatus(t Transport, resp *http.Response) error {
	if resp.StatusCode == http.StatusSeeOther {
		loc := resp.Header.Get("Location")
		if loc == "" {
			return &ProtocolError{Transport: t, Err: errors.New("303 without Location")}
		}
		return &redirectError{location: loc}
	}
	e := apiErrorFrom(resp)
	// An ipush refusal ({"error":...} with 400/401/503) is the server's
	// answer for every transport; anything else means this transport did not
	// get through (a proxy, an old server): try the next one.
	ipushRefusal := strings.Contains(resp.Header.Get("Content-Type"), "json") &&
		(resp.StatusCode == 400 || resp.StatusCode == 401 || resp.StatusCode == 503)
	if ipushRefusal {
		return e
	}
	return &unavailableError{transport: t, err: e}
}

// ---------------------------------------------------------------------------
// Chunked stream: a raw HTTP/1.1 connection (net/http parses the response
// head; the chunks are parsed here so that each message keeps its boundary).

type chunkedConn struct {
	activity
	nc    net.Conn
	br    *bufio.Reader
	codec Codec
	max   int
	buf   []byte // unparsed bytes
	wmu   sync.Mutex
}

func dialNet(ctx context.Context, u *url.URL, opts *Options) (net.Conn, error) {
	secure := u.Scheme == "https" || u.Scheme == "wss"
	host := u.Host
	if u.Port() == "" {
		if secure {
			host = net.JoinHostPort(u.Hostname(), "443")
		} else {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	d := net.Dialer{KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if secure {
		cfg := &tls.Config{}
		if opts.TLSConfig != nil {
			cfg = opts.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	return nc, nil
}

func dialChunked(ctx context.Context, p *dialParams) (streamConn, error) {
	u := p.connectURL()
	nc, err := dialNet(ctx, u, p.opts)
	if err != nil {
		return nil, &dialError{err}
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUser-Agent: " + userAgent + "\r\nAccept: */*\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 32<<10)
	hreq, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		return nil, &ProtocolError{Transport: Chunked, Err: fmt.Errorf("bad response head: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, errorForStatus(Chunked, resp)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		return nil, &unavailableError{transport: Chunked, err: errors.New("200 without Transfer-Encoding: chunked")}
	}
	if !stop() {
		return nil, ctx.Err()
	}
	nc.SetDeadline(time.Time{})
	c := &chunkedConn{nc: nc, br: br, codec: p.codec, max: p.opts.MaxMessageBytes}
	c.touch()
	ok = true
	return c, nil
}

func (c *chunkedConn) transport() Transport { return Chunked }

func (c *chunkedConn) read() (Message, error) {
	for {
		payload, n, last, err := parseChunk(c.buf, c.max)
		if err == nil {
			c.buf = c.buf[n:]
			if last {
				return Message{}, errCleanEnd
			}
			f, err := c.codec.decode(payload)
			if err != nil {
				return Message{}, &ProtocolError{Transport: Chunked, Err: err}
			}
			if f.end != nil {
				return Message{}, f.end
			}
			return f.msg, nil
		}
		if err != errNeedMore {
			return Message{}, &ProtocolError{Transport: Chunked, Err: err}
		}
		if err := c.fill(); err != nil {
			return Message{}, err
		}
	}
}

// fill reads more bytes into c.buf, compacting it first.
func (c *chunkedConn) fill() error {
	if cap(c.buf)-len(c.buf) < 4096 {
		nb := make([]byte, len(c.buf), 2*len(c.buf)+8192)
		copy(nb, c.buf)
		c.buf = nb
	}
	n, err := c.br.Read(c.buf[len(c.buf):cap(c.buf)])
	if n > 0 {
		c.touch()
		c.buf = c.buf[:len(c.buf)+n]
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func (c *chunkedConn) send(ctx context.Context, m Message) error {
	payload, err := c.codec.encode(nil, m)
	if err != nil {
		return err
	}
	frame := appendChunk(make([]byte, 0, len(payload)+12), payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return writeWithContext(ctx, c.nc, frame)
}

func (c *chunkedConn) close() { c.nc.Close() }

// writeWithContext writes b to nc, giving up when ctx ends.
func writeWithContext(ctx context.Context, nc net.Conn, b []byte) error {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	nc.SetWriteDeadline(dl)
	stop := context.AfterFunc(ctx, func() { nc.SetWriteDeadline(time.Unix(1, 0)) })
	_, err := nc.Write(b)
	stop()
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// dialError is a failure to reach the host at all: no other transport can do
// better, so the client backs off instead of falling back.
type dialError struct{ err error }

func (e *dialError) Error() string { return "ipush: connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// ---------------------------------------------------------------------------
// WebSocket (gorilla/websocket): text frames for JSON, binary for MessagePack.

type wsConn struct {
	activity
	ws        *websocket.Conn
	codec     Codec
	wmu       sync.Mutex
	closeCode int // sent by close(): 1000, or why the client refused a frame
}

func dialWebSocket(ctx context.Context, p *dialParams) (streamConn, error) {
	u := p.connectURL()
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	var dialFailed error
	// The socket (TLS included) is dialled here so that wsTap sees the
	// plaintext frames.
	netDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dialNet(ctx, u, p.opts)
		if err != nil {
			dialFailed = err
			return nil, err
		}
		return &wsTap{Conn: nc}, nil
	}
	d := websocket.Dialer{
		NetDialContext:    netDial,
		NetDialTLSContext: netDial,
		HandshakeTimeout:  p.opts.DialTimeout,
		ReadBufferSize:    16 << 10,
		WriteBufferSize:   16 << 10,
	}
	hdr := http.Header{"User-Agent": {userAgent}}
	ws, resp, err := d.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if dialFailed != nil {
			return nil, &dialError{dialFailed}
		}
		if resp != nil {
			defer resp.Body.Close()
			if errors.Is(err, websocket.ErrBadHandshake) {
				return nil, errorForStatus(WebSocket, resp)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &unavailableError{transport: WebSocket, err: err}
	}
	c := &wsConn{ws: ws, codec: p.codec, closeCode: websocket.CloseNormalClosure}
	ws.SetReadLimit(int64(p.opts.MaxMessageBytes))
	ws.SetPingHandler(func(data string) error {
		c.touch()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			return err
		}
		return nil
	})
	ws.SetPongHandler(func(string) error { c.touch(); return nil })
	c.touch()
	return c, nil
}

func (c *wsConn) transport() Transport { return WebSocket }

func (c *wsConn) read() (Message, error) {
	typ, data, err := c.ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			c.touch()
			if ce.Text != "" {
				if f, derr := decodeJSON([]byte(ce.Text)); derr == nil && f.end != nil {
					return Message{}, f.end
				}
			}
			if ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway {
				return Message{}, errCleanEnd
			}
			if ce.Code == websocket.CloseServiceRestart && ce.Text != "" {
				return Message{}, &ProtocolError{Transport: WebSocket, Err: fmt.Errorf("close 1012 with a bad reason: %q", ce.Text)}
			}
			return Message{}, fmt.Errorf("ipush: WebSocket closed: %w", err)
		}
		var te *wsTapError
		if errors.As(err, &te) {
			c.closeCode = websocket.CloseProtocolError
			return Message{}, &ProtocolError{Transport: WebSocket, Err: te}
		}
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			return Message{}, err
		}
		// gorilla reports protocol violations (bad opcode, masked server
		// frame, bad close code, oversized message) as plain errors.
		return Message{}, &ProtocolError{Transport: WebSocket, Err: err}
	}
	c.touch()
	var f frame
	switch typ {
	case websocket.TextMessage:
		if !utf8.Valid(data) {
			c.closeCode = websocket.CloseInvalidFramePayloadData
			return Message{}, &ProtocolError{Transport: WebSocket, Err: errors.New("text message is not UTF-8")}
		}
		f, err = decodeJSON(data)
	case websocket.BinaryMessage:
		f, err = decodeMsgpack(data)
	}
	if err != nil {
		c.closeCode = websocket.ClosePolicyViolation
		return Message{}, &ProtocolError{Transport: WebSocket, Err: err}
	}
	if f.end != nil {
		return Message{}, f.end
	}
	return f.msg, nil
}

func (c *wsConn) send(ctx context.Context, m Message) error {
	payload, err := c.codec.encode(nil, m)
	if err != nil {
		return err
	}
	typ := websocket.TextMessage
	if c.codec == MsgPack {
		typ = websocket.BinaryMessage
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	c.ws.SetWriteDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.ws.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.ws.WriteMessage(typ, payload); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// close sends a close frame (unless one was sent already: gorilla sends 1002
// itself on a protocol error) and closes the socket. It runs after the reader
// stopped, so closeCode is settled.
func (c *wsConn) close() {
	c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(c.closeCode, ""), time.Now().Add(time.Second))
	c.ws.Close()
}

// wsTap sits under gorilla/websocket and follows the server's frame headers
// to refuse what gorilla accepts but RFC 6455 forbids: a close frame with a
// 1-byte payload (§5.5.1; gorilla reads it as "no status"). The bytes before
// the bad frame's header end are passed on, then the read fails.
type wsTap struct {
	net.Conn
	scan wsScanner
	err  error
}

type wsTapError struct{ msg string }

func (e *wsTapError) Error() string { return e.msg }

func (t *wsTap) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.Conn.Read(p)
	if n > 0 {
		if bad, serr := t.scan.feed(p[:n]); serr != nil {
			t.err = serr
			return bad, nil
		}
	}
	return n, err
}

// wsScanner tracks frame boundaries in a stream of WebSocket frames: header
// bytes are collected until the header is complete, then the payload length
// is skipped.
type wsScanner struct {
	inFrames bool   // the HTTP response head is behind
	tail     uint32 // the last 4 bytes of the head so far
	hdr      [14]byte
	nhdr     int
	skip     uint64
}

// feed consumes b; on a forbidden frame it returns the offset of the header
// byte that revealed it (the bytes before it are safe to pass on).
func (s *wsScanner) feed(b []byte) (int, error) {
	for i := 0; i < len(b); {
		if !s.inFrames {
			s.tail = s.tail<<8 | uint32(b[i])
			s.inFrames = s.tail == 0x0d0a0d0a // "\r\n\r\n"
			i++
			continue
		}
		if s.skip > 0 {
			n := uint64(len(b) - i)
			if n > s.skip {
				n = s.skip
			}
			s.skip -= n
			i += int(n)
			continue
		}
		s.hdr[s.nhdr] = b[i]
		s.nhdr++
		if s.nhdr < 2 {
			i++
			continue
		}
		need := 2
		switch s.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if s.hdr[1]&0x80 != 0 {
			need += 4
		}
		if s.nhdr < need {
			i++
			continue
		}
		var length uint64
		switch l := s.hdr[1] & 0x7f; l {
		case 126:
			length = uint64(s.hdr[2])<<8 | uint64(s.hdr[3])
		case 127:
			for k := 2; k < 10; k++ {
				length = length<<8 | uint64(s.hdr[k])
			}
		default:
			length = uint64(l)
		}
		if s.hdr[0]&0x0f == websocket.CloseMessage && length == 1 {
			return i, &wsTapError{"close frame with a 1-byte payload"}
		}
		s.nhdr, s.skip = 0, length
		i++
	}
	return len(b), nil
}

// ---------------------------------------------------------------------------
// Server-Sent Events over net/http; sends go through POST /send.

type sseConn struct {
	activity
	body   io.ReadCloser
	cancel context.CancelFunc
	parser sseParser
	queue  []sseEvent
	buf    []byte
	p      dialParams
	hc     *http.Client
}

func dialSSE(ctx context.Context, p *dialParams) (streamConn, error) {
	u := p.connectURL()
	streamCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	req, err := http.NewRequestWithContext(streamCtx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("User-Agent", userAgent)
	if p.lastSeq > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(p.lastSeq, 10))
	}
	hc := p.opts.noRedirectClient()
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return nil, &dialError{err}
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		return nil, errorForStatus(SSE, resp)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		cancel()
		return nil, &unavailableError{transport: SSE, err: fmt.Errorf("200 with Content-Type %q", ct)}
	}
	if !stop() {
		resp.Body.Close()
		cancel()
		return nil, ctx.Err()
	}
	c := &sseConn{body: resp.Body, cancel: cancel, p: *p, hc: hc, buf: make([]byte, 16<<10)}
	c.parser.max = p.opts.MaxMessageBytes + 64
	c.touch()
	return c, nil
}

func (c *sseConn) transport() Transport { return SSE }

func (c *sseConn) read() (Message, error) {
	for {
		for len(c.queue) > 0 {
			ev := c.queue[0]
			c.queue = c.queue[1:]
			m, ok, err := c.message(ev)
			if err != nil || ok {
				return m, err
			}
		}
		n, err := c.body.Read(c.buf)
		if n > 0 {
			c.touch()
			evs, perr := c.parser.feed(c.buf[:n])
			c.queue = append(c.queue, evs...)
			if perr != nil {
				return Message{}, &ProtocolError{Transport: SSE, Err: perr}
			}
			continue
		}
		if err == io.EOF {
			return Message{}, errCleanEnd
		}
		if err != nil {
			return Message{}, err
		}
	}
}

// message interprets one event: ok=false for events that carry nothing for
// the application.
func (c *sseConn) message(ev sseEvent) (Message, bool, error) {
	if ev.Data == "" && ev.Event == "" {
		return Message{}, false, nil
	}
	f, err := decodeJSON([]byte(ev.Data))
	if err != nil {
		return Message{}, false, &ProtocolError{Transport: SSE, Err: fmt.Errorf("event %q: %w", ev.Event, err)}
	}
	if ev.Event == "moved" {
		if f.end == nil || f.end.Location == "" {
			return Message{}, false, &ProtocolError{Transport: SSE, Err: fmt.Errorf("moved event without a location: %q", ev.Data)}
		}
		f.end.Reason = "moved"
		return Message{}, false, f.end
	}
	if f.end != nil {
		return Message{}, false, f.end
	}
	if ev.HasID && f.msg.HasSeq && ev.ID != strconv.FormatUint(f.msg.Seq, 10) {
		return Message{}, false, &ProtocolError{Transport: SSE, Err: fmt.Errorf("event id %q is not the seq %d", ev.ID, f.msg.Seq)}
	}
	return f.msg, true, nil
}

func (c *sseConn) send(ctx context.Context, m Message) error {
	return postSend(ctx, c.hc, &c.p, m)
}

// postSend sends one message through POST /send on the client port.
func postSend(ctx context.Context, hc *http.Client, p *dialParams, m Message) error {
	body, err := JSON.encode(nil, m)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.sendURL(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiErrorFrom(resp)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return nil
}

func (c *sseConn) close() {
	c.cancel()
	c.body.Close()
}
