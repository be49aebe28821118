package ipush

// client.go owns the Client: its options, the connect/reconnect loop run by
// Run's goroutine (which alone touches the delivery state: highest seq, acks,
// timers, and calls every callback), and the send methods, which any
// goroutine may call.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const userAgent = "ipush-go/1"

// Options configure a Client. The zero value of every field is a sensible
// default; see each field.
type Options struct {
	// Password is sent as &password= on every connect (with --auth=none, any
	// non-empty string). Ignored when Token is set.
	Password string
	// Token, when set, is called before every connect and reconnect (also after
	// a move) to get the password, e.g. a fresh HS256 JWT for --auth=jwt.
	Token func(ctx context.Context) (string, error)

	// Transports is the ordered list to try; the first that gets through is
	// used. Default: []Transport{WebSocket}. Fallback is WebSocket, SSE,
	// Chunked. SSE is skipped with the MsgPack codec (the server refuses it).
	Transports []Transport
	// Codec is JSON (default) or MsgPack.
	Codec Codec

	// ManualAck turns automatic acks off: the application calls Ack.
	ManualAck bool
	// AckInterval: an automatic ack of the highest seq delivered is sent at
	// most this long after a message was delivered (default 500 ms)...
	AckInterval time.Duration
	// AckEvery: ...or as soon as this many messages await an ack (default 50).
	AckEvery int

	// HeartbeatInterval (default 30 s): {"y":0} is sent when nothing has
	// arrived for this long, and a stream silent for 3 intervals is dead and
	// reconnected. Negative disables both. Over SSE (one-way) the client only
	// watches: the server's own heartbeats keep the stream alive.
	HeartbeatInterval time.Duration

	// Reconnect backoff: the n-th consecutive failed attempt (from 0) sleeps a
	// random duration in [0, min(BackoffCap, BackoffBase*2^n)) ("full
	// jitter"). Defaults 500 ms and 30 s. A successful connect resets n; a
	// move reconnects at once.
	BackoffBase time.Duration
	BackoffCap  time.Duration

	// LastSeq is the highest seq the application already has (e.g. from a
	// previous run): messages with seq <= LastSeq are dropped.
	LastSeq uint64

	// ReconnectOnReplaced makes the client reconnect (with backoff) after
	// another connection of the same uid replaced it. By default Run returns
	// ErrReplaced instead: two clients of one uid would otherwise evict each
	// other forever.
	ReconnectOnReplaced bool

	// DialTimeout bounds each connect handshake (default 10 s).
	DialTimeout time.Duration
	// HTTPClient carries SSE streams and POST /send (its Timeout and
	// CheckRedirect are not used: 303 is handled by the client). Default:
	// http.DefaultTransport.
	HTTPClient *http.Client
	// TLSConfig is used for https:// base URLs on WebSocket and the chunked
	// stream (SSE uses HTTPClient's transport).
	TLSConfig *tls.Config
	// MaxMessageBytes bounds one incoming message (default 16 MiB).
	MaxMessageBytes int

	// Callbacks. All are called from Run's goroutine, one at a time and in
	// order; they may call the client's send methods and Close. A slow
	// OnMessage slows reading (the server buffers, then drops a slow reader).
	OnMessage      func(Message)
	OnConnected    func(Connected)
	OnDisconnected func(reason error)
	OnError        func(err error)
	OnMoved        func(location string)
	OnReplaced     func()
}

// Connected describes a stream that has just opened.
type Connected struct {
	Transport Transport
	// URL is the node the stream is on, "http://host:port" (after any 303 or
	// move).
	URL string
}

// Client is a push client for one uid. Create it with NewClient, start it
// with Run; it reconnects until its context ends, Close is called, or the
// server refuses it for good.
type Client struct {
	base       *url.URL
	uid        string
	opts       Options
	transports []Transport

	mu      sync.Mutex
	conn    streamConn
	running bool

	closed    chan struct{}
	closeOnce sync.Once
	lastSeq   atomic.Uint64 // highest seq delivered to the application

	// Run's goroutine only:
	pending uint64 // highest seq delivered and to be acked automatically
	acked   uint64 // highest automatic ack sent
	unacked int    // messages delivered since the last automatic ack

	// Test hooks.
	sleep func(ctx context.Context, d time.Duration) error
}

// NewClient makes a client of uid on the client port at baseURL
// ("http://host:9000" or "https://…"; a path prefix is kept, "/connect" is
// appended).
func NewClient(baseURL, uid string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("ipush: bad base URL %q: %w", baseURL, err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, fmt.Errorf("ipush: bad base URL %q: the scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("ipush: bad base URL %q: no host", baseURL)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/connect")
	u.RawQuery, u.Fragment = "", ""
	if uid == "" {
		return nil, errors.New("ipush: empty uid")
	}
	if opts.Token == nil && opts.Password == "" {
		return nil, errors.New("ipush: a Password or a Token callback is required")
	}
	switch opts.Codec {
	case "":
		opts.Codec = JSON
	case JSON, MsgPack:
	default:
		return nil, fmt.Errorf("ipush: unknown codec %q (json or msgpack)", opts.Codec)
	}
	if len(opts.Transports) == 0 {
		opts.Transports = []Transport{WebSocket}
	}
	var trs []Transport
	for _, t := range opts.Transports {
		switch t {
		case WebSocket, Chunked:
		case SSE:
			if opts.Codec == MsgPack {
				continue
			}
		default:
			return nil, fmt.Errorf("ipush: unknown transport %q (websocket, sse or chunked)", t)
		}
		trs = append(trs, t)
	}
	if len(trs) == 0 {
		return nil, errors.New("ipush: MessagePack is not available over SSE: choose WebSocket or Chunked")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&opts.AckInterval, 500*time.Millisecond)
	def(&opts.HeartbeatInterval, 30*time.Second)
	def(&opts.BackoffBase, 500*time.Millisecond)
	def(&opts.BackoffCap, 30*time.Second)
	def(&opts.DialTimeout, 10*time.Second)
	if opts.AckEvery <= 0 {
		opts.AckEvery = 50
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 16 << 20
	}
	if opts.BackoffBase < 0 || opts.BackoffCap < opts.BackoffBase {
		return nil, errors.New("ipush: need 0 <= BackoffBase <= BackoffCap")
	}
	c := &Client{base: u, uid: uid, opts: opts, transports: trs, closed: make(chan struct{})}
	c.lastSeq.Store(opts.LastSeq)
	c.sleep = sleepCtx
	return c, nil
}

// UID is the client's uid.
func (c *Client) UID() string { return c.uid }

// LastSeq is the highest seq delivered to the application so far.
func (c *Client) LastSeq() uint64 { return c.lastSeq.Load() }

// Close stops the client: Run sends any pending automatic ack, closes the
// stream and returns nil. Close does not wait for that; it is safe from a
// callback and more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Subscribe adds the user to channel cid (stored by the server at once).
func (c *Client) Subscribe(ctx context.Context, cid string) error {
	if cid == "" {
		return errors.New("ipush: empty channel")
	}
	return c.send(ctx, Message{Type: TypeSubscribe, From: c.uid, Channel: cid})
}

// Unsubscribe removes the user from channel cid.
func (c *Client) Unsubscribe(ctx context.Context, cid string) error {
	if cid == "" {
		return errors.New("ipush: empty channel")
	}
	return c.send(ctx, Message{Type: TypeUnsubscribe, From: c.uid, Channel: cid})
}

// SendToUser sends body to user `to` (on any node).
func (c *Client) SendToUser(ctx context.Context, to, body string) error {
	if to == "" {
		return errors.New("ipush: empty recipient")
	}
	return c.send(ctx, Message{Type: TypeUser, From: c.uid, To: to, Body: body})
}

// SendToChannel sends body to every member of channel cid (the sender too
// when it is a member).
func (c *Client) SendToChannel(ctx context.Context, cid, body string) error {
	if cid == "" {
		return errors.New("ipush: empty channel")
	}
	return c.send(ctx, Message{Type: TypeChannel, From: c.uid, Channel: cid, Body: body})
}

// Ack tells the server the application has every message up to seq
// (last_ack = max(last_ack, seq)). With automatic acks there is no need to
// call it.
func (c *Client) Ack(ctx context.Context, seq uint64) error {
	return c.send(ctx, Message{Type: TypeAck, From: c.uid, Seq: seq, HasSeq: true})
}

// send writes m on the open stream (or POST /send for SSE).
func (c *Client) send(ctx context.Context, m Message) error {
	if c.isClosed() {
		return ErrClosed
	}
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return ErrNotConnected
	}
	return conn.send(ctx, m)
}

func (c *Client) setConn(conn streamConn) {
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
}

// Run connects and keeps the client connected until ctx ends (returns
// ctx.Err()), Close is called (returns nil), or the server refuses for good:
// a 400 (bad uid or parameters), a 401 without a Token callback, or
// ErrReplaced. Every other failure is an OnError/OnDisconnected event and a
// reconnect.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return ErrRunning
	}
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	exit := func() error {
		if c.isClosed() {
			return nil
		}
		return ctx.Err()
	}

	node, extra := c.base, url.Values(nil)
	attempt, moves := 0, 0
	backoff := func() error {
		d := backoffDelay(attempt, c.opts.BackoffBase, c.opts.BackoffCap, rand.Float64())
		attempt++
		return c.sleep(ctx, d)
	}
	for {
		if ctx.Err() != nil || c.isClosed() {
			return exit()
		}
		conn, p, err := c.connect(ctx, node, extra)
		if err != nil {
			if ctx.Err() != nil {
				return exit()
			}
			c.emitError(err)
			if c.fatal(err) {
				return err
			}
			node, extra = c.base, nil // a 303 from the entry node finds the owner again
			if backoff() != nil {
				return exit()
			}
			continue
		}
		attempt = 0
		node, extra = p.node, p.extra
		c.setConn(conn)
		if f := c.opts.OnConnected; f != nil {
			f(Connected{Transport: conn.transport(), URL: p.node.String()})
		}
		connectedAt := time.Now()
		end := c.serve(ctx, conn)
		c.setConn(nil)
		conn.close()
		if time.Since(connectedAt) > stableStream {
			moves = 0 // only moves in quick succession count towards maxMoves
		}

		if ctx.Err() != nil {
			reason := ctx.Err()
			if c.isClosed() {
				reason = ErrClosed
			}
			c.emitDisconnected(reason)
			return exit()
		}
		var se *StreamError
		var pe *ProtocolError
		switch {
		case errors.As(end, &se) && se.Reason == "moved":
			n, x, err := nodeOf(p.connectURL(), se.Location)
			if err != nil {
				c.emitError(&ProtocolError{Transport: conn.transport(), Err: err})
				c.emitDisconnected(end)
				node, extra = c.base, nil
				break
			}
			if f := c.opts.OnMoved; f != nil {
				f(se.Location)
			}
			c.emitDisconnected(end)
			node, extra = n, x
			moves++
			if moves <= maxMoves {
				continue // at once: no backoff for a move
			}
		case errors.As(end, &se) && se.Reason == "replaced":
			if f := c.opts.OnReplaced; f != nil {
				f()
			}
			c.emitDisconnected(end)
			if !c.opts.ReconnectOnReplaced {
				return ErrReplaced
			}
		case errors.As(end, &pe):
			c.emitError(end)
			c.emitDisconnected(end)
		default:
			c.emitDisconnected(end)
		}
		moves = 0
		if backoff() != nil {
			return exit()
		}
	}
}

// maxMoves bounds immediate reconnects on "moved" in quick succession (two
// nodes pointing at each other must not spin); after that the client backs
// off. A stream that lived stableStream resets the count.
const (
	maxMoves     = 8
	stableStream = 5 * time.Second
)

// maxRedirects bounds the 303 hops of one connect.
const maxRedirects = 8

func (c *Client) fatal(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusBadRequest || (ae.Status == http.StatusUnauthorized && c.opts.Token == nil)
	}
	return false
}

func (c *Client) emitError(err error) {
	if f := c.opts.OnError; f != nil {
		f(err)
	}
}

func (c *Client) emitDisconnected(reason error) {
	if f := c.opts.OnDisconnected; f != nil {
		f(reason)
	}
}

// connect makes one connect attempt: a token, then each transport in order,
// following 303s.
func (c *Client) connect(ctx context.Context, node *url.URL, extra url.Values) (streamConn, *dialParams, error) {
	token := c.opts.Password
	if c.opts.Token != nil {
		t, err := c.opts.Token(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("ipush: token callback: %w", err)
		}
		if t == "" {
			return nil, nil, errors.New("ipush: token callback returned an empty token")
		}
		token = t
	}
	hops := 0
	for i := 0; i < len(c.transports); {
		t := c.transports[i]
		p := &dialParams{node: node, extra: extra, uid: c.uid, token: token, codec: c.opts.Codec,
			lastSeq: c.lastSeq.Load(), opts: &c.opts}
		dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
		var conn streamConn
		var err error
		switch t {
		case WebSocket:
			conn, err = dialWebSocket(dctx, p)
		case SSE:
			conn, err = dialSSE(dctx, p)
		default:
			conn, err = dialChunked(dctx, p)
		}
		cancel()
		var re *redirectError
		var ue *unavailableError
		switch {
		case err == nil:
			return conn, p, nil
		case errors.As(err, &re):
			if hops++; hops > maxRedirects {
				return nil, nil, fmt.Errorf("ipush: more than %d redirects (last to %s)", maxRedirects, re.location)
			}
			if node, extra, err = nodeOf(p.connectURL(), re.location); err != nil {
				return nil, nil, err
			}
		case errors.As(err, &ue) && i+1 < len(c.transports):
			c.emitError(err)
			i++
		default:
			if ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("ipush: %s connect to %s timed out after %v", t, node, c.opts.DialTimeout)
			}
			return nil, nil, err
		}
	}
	return nil, nil, errors.New("ipush: no transport") // unreachable: the last transport returns
}

type readResult struct {
	msg Message
	err error
}

// serve runs one open stream until it ends; it returns why.
func (c *Client) serve(ctx context.Context, conn streamConn) error {
	frames := make(chan readResult, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			m, err := conn.read()
			select {
			case frames <- readResult{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	// A new stream: re-send the last automatic ack (the previous one may
	// have been lost with the old connection).
	if !c.opts.ManualAck && c.pending > 0 {
		c.acked = 0
		c.sendAck(ctx, conn, false)
	}

	hb := c.opts.HeartbeatInterval
	var idleC, deadC, ackC <-chan time.Time
	var idle, dead *time.Timer
	if hb > 0 {
		idle, dead = time.NewTimer(hb), time.NewTimer(3*hb)
		defer idle.Stop()
		defer dead.Stop()
		idleC, deadC = idle.C, dead.C
	}
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	defer ackTimer.Stop()
	since := func() time.Duration { return time.Duration(time.Now().UnixNano() - conn.lastRead()) }
	hbOutstanding := false // a heartbeat of ours awaits the server's answer
	sendHeartbeat := func() {
		hbOutstanding = true
		go func() {
			sctx, cancel := context.WithTimeout(ctx, hb)
			defer cancel()
			conn.send(sctx, Message{Type: TypeHeartbeat})
		}()
	}

	for {
		select {
		case <-ctx.Done():
			if c.isClosed() && !c.opts.ManualAck {
				c.sendAck(context.Background(), conn, true)
			}
			return ctx.Err()
		case r := <-frames:
			if r.err != nil {
				return r.err
			}
			if r.msg.Type == TypeHeartbeat {
				// Answer the server's heartbeat, but not the server's answer to
				// ours (that would ping-pong forever).
				if !hbOutstanding && hb > 0 && conn.transport() != SSE {
					sendHeartbeat()
				} else {
					hbOutstanding = false
				}
				continue
			}
			if c.deliver(r.msg) && !c.opts.ManualAck {
				if c.unacked >= c.opts.AckEvery {
					c.sendAck(ctx, conn, false)
					ackTimer.Stop()
					ackC = nil
				} else if ackC == nil {
					ackTimer.Reset(c.opts.AckInterval)
					ackC = ackTimer.C
				}
			}
		case <-ackC:
			ackC = nil
			c.sendAck(ctx, conn, false)
		case <-idleC:
			if s := since(); s < hb {
				idle.Reset(hb - s)
				continue
			}
			if conn.transport() != SSE {
				sendHeartbeat()
			}
			idle.Reset(hb)
		case <-deadC:
			if s := since(); s < 3*hb {
				dead.Reset(3*hb - s)
				continue
			}
			return ErrHeartbeatTimeout
		}
	}
}

// deliver hands m to the application unless it is a heartbeat or a
// duplicate; it says whether m now awaits an automatic ack.
func (c *Client) deliver(m Message) bool {
	if m.Type == TypeHeartbeat {
		return false
	}
	if m.HasSeq {
		if m.Seq <= c.lastSeq.Load() {
			return false // already delivered (a replay after a reconnect)
		}
		c.lastSeq.Store(m.Seq)
	}
	if f := c.opts.OnMessage; f != nil {
		f(m)
	}
	if !m.HasSeq {
		return false
	}
	c.pending = m.Seq
	c.unacked++
	return true
}

// sendAck acks c.pending if it is above the last automatic ack. The write
// runs on its own goroutine unless wait (a stalled socket must not stop
// reading).
func (c *Client) sendAck(ctx context.Context, conn streamConn, wait bool) {
	if c.pending <= c.acked {
		return
	}
	seq := c.pending
	c.acked, c.unacked = seq, 0
	m := Message{Type: TypeAck, From: c.uid, Seq: seq, HasSeq: true}
	timeout := 5 * time.Second
	if wait {
		timeout = 2 * time.Second
	}
	write := func() {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := conn.send(sctx, m); err != nil && wait {
			c.emitError(fmt.Errorf("ipush: ack %d: %w", seq, err))
		}
	}
	if wait {
		write()
	} else {
		go write()
	}
}

// backoffDelay is the full-jitter delay of attempt n: r*min(cap, base*2^n),
// r in [0,1).
func backoffDelay(n int, base, cap time.Duration, r float64) time.Duration {
	d := float64(base) * math.Pow(2, float64(n))
	if d > float64(cap) || math.IsInf(d, 0) {
		d = float64(cap)
	}
	return time.Duration(r * d)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// noRedirectClient is the HTTP client for SSE and /send: the caller's
// transport, no timeout (streams are long), 303 handled by the SDK.
func (o *Options) noRedirectClient() *http.Client {
	hc := &http.Client{}
	if o.HTTPClient != nil {
		hc.Transport, hc.Jar = o.HTTPClient.Transport, o.HTTPClient.Jar
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hc
}
