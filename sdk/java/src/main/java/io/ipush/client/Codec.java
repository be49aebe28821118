package io.ipush.client;

import java.io.IOException;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.msgpack.core.MessageBufferPacker;
import org.msgpack.core.MessageFormat;
import org.msgpack.core.MessagePack;
import org.msgpack.core.MessageUnpacker;
import org.msgpack.value.ValueType;

/**
 * The two payload encodings of a message ({@code &codec=msgpack} selects MessagePack): pure
 * functions from bytes to a map and back, no I/O.
 */
public enum Codec {
  /** UTF-8 JSON objects. */
  JSON,
  /** MessagePack maps with the same keys. */
  MSGPACK;

  /** The {@code codec} query value, or {@code null} for the default (JSON). */
  String queryValue() {
    return this == MSGPACK ? "msgpack" : null;
  }

  public byte[] encode(Message m) {
    return encodeMap(m.toMap());
  }

  /** Encodes a map whose values are String, Long/Integer, Boolean or null. */
  public byte[] encodeMap(Map<String, Object> m) {
    if (this == JSON) {
      return Json.write(m).getBytes(StandardCharsets.UTF_8);
    }
    try (MessageBufferPacker p = MessagePack.newDefaultBufferPacker()) {
      packValue(p, m);
      return p.toByteArray();
    } catch (IOException e) {
      throw new IllegalStateException("packing into memory failed", e);
    }
  }

  /** Decodes one payload into a map (the whole payload must be one object/map). */
  public Map<String, Object> decodeMap(byte[] payload) throws ProtocolException {
    return decodeMap(payload, 0, payload.length);
  }

  public Map<String, Object> decodeMap(byte[] b, int off, int len) throws ProtocolException {
    if (this == JSON) {
      return Json.parseObject(utf8(b, off, len));
    }
    try (MessageUnpacker u = MessagePack.newDefaultUnpacker(b, off, len)) {
      if (!u.hasNext() || u.getNextFormat().getValueType() != ValueType.MAP) {
        throw new ProtocolException("msgpack payload is not a map");
      }
      @SuppressWarnings("unchecked")
      Map<String, Object> m = (Map<String, Object>) unpackValue(u, 0);
      if (u.hasNext()) {
        throw new ProtocolException("msgpack payload has trailing bytes");
      }
      return m;
    } catch (IOException | RuntimeException e) {
      throw new ProtocolException("invalid msgpack: " + e.getMessage(), e);
    }
  }

  /** Decodes one payload into a message. */
  public Message decode(byte[] payload) throws ProtocolException {
    return Message.fromMap(decodeMap(payload));
  }

  /** Strict UTF-8 decoding: invalid bytes are an error, not U+FFFD. */
  static String utf8(byte[] b, int off, int len) throws ProtocolException {
    try {
      CharBuffer cb =
          StandardCharsets.UTF_8
              .newDecoder()
              .onMalformedInput(CodingErrorAction.REPORT)
              .onUnmappableCharacter(CodingErrorAction.REPORT)
              .decode(ByteBuffer.wrap(b, off, len));
      return cb.toString();
    } catch (CharacterCodingException e) {
      throw new ProtocolException("invalid UTF-8");
    }
  }

  private static void packValue(MessageBufferPacker p, Object v) throws IOException {
    if (v == null) {
      p.packNil();
    } else if (v instanceof String) {
      p.packString((String) v);
    } else if (v instanceof Long || v instanceof Integer || v instanceof Short) {
      p.packLong(((Number) v).longValue());
    } else if (v instanceof BigInteger) {
      p.packBigInteger((BigInteger) v);
    } else if (v instanceof Boolean) {
      p.packBoolean((Boolean) v);
    } else if (v instanceof Double || v instanceof Float) {
      p.packDouble(((Number) v).doubleValue());
    } else if (v instanceof Map) {
      Map<?, ?> m = (Map<?, ?>) v;
      p.packMapHeader(m.size());
      for (Map.Entry<?, ?> e : m.entrySet()) {
        p.packString(String.valueOf(e.getKey()));
        packValue(p, e.getValue());
      }
    } else if (v instanceof List) {
      List<?> l = (List<?>) v;
      p.packArrayHeader(l.size());
      for (Object o : l) {
        packValue(p, o);
      }
    } else {
      throw new IllegalArgumentException("cannot pack " + v.getClass().getName());
    }
  }

  private static Object unpackValue(MessageUnpacker u, int depth)
      throws IOException, ProtocolException {
    if (depth > 64) {
      throw new ProtocolException("msgpack nested too deep");
    }
    MessageFormat f = u.getNextFormat();
    switch (f.getValueType()) {
      case NIL:
        u.unpackNil();
        return null;
      case BOOLEAN:
        return u.unpackBoolean();
      case INTEGER:
        if (f == MessageFormat.UINT64) {
          BigInteger b = u.unpackBigInteger();
          return b.bitLength() < 64 ? (Object) b.longValue() : b;
        }
        return u.unpackLong();
      case FLOAT:
        return u.unpackDouble();
      case STRING:
        {
          int n = u.unpackRawStringHeader();
          byte[] raw = u.readPayload(n);
          return utf8(raw, 0, raw.length);
        }
      case BINARY:
        {
          int n = u.unpackBinaryHeader();
          return u.readPayload(n);
        }
      case ARRAY:
        {
          int n = u.unpackArrayHeader();
          List<Object> l = new ArrayList<>(Math.min(n, 1024));
          for (int i = 0; i < n; i++) {
            l.add(unpackValue(u, depth + 1));
          }
          return l;
        }
      case MAP:
        {
          int n = u.unpackMapHeader();
          Map<String, Object> m = new LinkedHashMap<>();
          for (int i = 0; i < n; i++) {
            if (u.getNextFormat().getValueType() != ValueType.STRING) {
              throw new ProtocolException("msgpack map key is not a string");
            }
            String k = (String) unpackValue(u, depth + 1);
            if (m.containsKey(k)) {
              throw new ProtocolException("duplicate msgpack key \"" + k + "\"");
            }
            m.put(k, unpackValue(u, depth + 1));
          }
          return m;
        }
      default:
        throw new ProtocolException("unsupported msgpack type " + f);
    }
  }
}
