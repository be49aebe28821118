// Package ipush is the Go client of the ipush push server: a Client that
// holds one user's stream (WebSocket by default, Server-Sent Events or the
// chunked HTTP stream as fallbacks; JSON or MessagePack) and an Admin client
// for the admin HTTP API.
//
// # How the client works
//
// Client.Run owns everything about the stream: it connects (following 303
// redirects to the user's node), reads messages, drops any message whose seq
// is not above the highest seq already delivered (the server replays every
// unacknowledged message after a reconnect), acknowledges what was delivered
// (batched, or by hand with Client.Ack), sends a heartbeat when the stream is
// idle and declares it dead after 3 silent heartbeat intervals, and reconnects
// with exponential backoff and full jitter. A move signal from the server
// ({"error":"moved","location":…} on the chunked stream, WebSocket close 1012,
// SSE event "moved") makes it reconnect to the new node at once;
// {"error":"replaced"} (another connection of the same uid took over) ends Run
// with ErrReplaced.
//
// Events are callbacks in Options (OnMessage, OnConnected, OnDisconnected,
// OnError, OnMoved, OnReplaced), all called from Run's goroutine, one at a time
// and in order. Send methods (Subscribe, Unsubscribe, SendToUser,
// SendToChannel, Ack) may be called from any goroutine, callbacks included;
// over SSE, which is one-way, they use POST /send on the client port.
//
// # Files
//
//   - client.go: Client, Options, the connect/reconnect loop and delivery state.
//   - transport.go: the three transports behind one interface.
//   - framing.go: the chunk and SSE parsers (pure, fed in fragments).
//   - message.go: Message and the JSON / MessagePack codecs (pure).
//   - admin.go: the admin API client.
//   - errors.go: error types (APIError, StreamError, ProtocolError).
package ipush
