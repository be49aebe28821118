// @ipush/client: the ipush push client (browser and Node 20+) and the admin API client.

export {
  Client,
  type ClientEvents,
  type ClientOptions,
  type ClientState,
  type Credentials,
  type PushMessage,
} from './client.js';
export {
  AdminClient,
  IpushError,
  type AdminOptions,
  type BatchItem,
  type BatchResult,
  type PublishOptions,
} from './admin.js';
export {
  backoffDelay,
  ChunkDecoder,
  decode,
  decodeJson,
  decodeMsgpack,
  encodeJson,
  encodeMsgpack,
  JsonSplitter,
  MessageType,
  ProtocolError,
  SseParser,
  toServerValue,
  validId,
  type Codec,
  type Message,
  type MessageTypeCode,
  type ServerValue,
  type SseEvent,
  type StreamError,
} from './protocol.js';
export type { End, Transport, WebSocketConstructor, WebSocketLike } from './transports.js';
