package io.ipush.client;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small JSON reader and writer for the message model and admin answers (no I/O, no dependencies).
 * Objects read as {@link LinkedHashMap}, arrays as {@link ArrayList}, integers as {@link Long} (or
 * {@link BigInteger} beyond 64 bits), other numbers as {@link Double}.
 */
public final class Json {
  private Json() {}

  /** Nesting depth past which input is refused (guards the recursive reader). */
  private static final int MAX_DEPTH = 64;

  /** Parses one JSON value; the whole text must be that value (whitespace around it allowed). */
  public static Object parse(String text) throws ProtocolException {
    Reader r = new Reader(text);
    r.skipWs();
    Object v = r.value(0);
    r.skipWs();
    if (r.pos != text.length()) {
      throw new ProtocolException("invalid JSON: trailing characters at " + r.pos);
    }
    return v;
  }

  /** Parses a JSON object; anything else is an error. */
  @SuppressWarnings("unchecked")
  public static Map<String, Object> parseObject(String text) throws ProtocolException {
    Object v = parse(text);
    if (!(v instanceof Map)) {
      throw new ProtocolException("invalid JSON: expected an object");
    }
    return (Map<String, Object>) v;
  }

  /** Writes a value: Map (String keys), List, String, Number, Boolean or null. */
  public static String write(Object value) {
    StringBuilder sb = new StringBuilder();
    write(sb, value);
    return sb.toString();
  }

  static void write(StringBuilder sb, Object v) {
    if (v == null) {
      sb.append("null");
    } else if (v instanceof String) {
      quote(sb, (String) v);
    } else if (v instanceof Boolean) {
      sb.append(((Boolean) v).booleanValue() ? "true" : "false");
    } else if (v instanceof Double || v instanceof Float) {
      double d = ((Number) v).doubleValue();
      if (Double.isNaN(d) || Double.isInfinite(d)) {
        throw new IllegalArgumentException("JSON has no NaN or infinity");
      }
      sb.append(d);
    } else if (v instanceof Number) {
      sb.append(v.toString());
    } else if (v instanceof Map) {
      sb.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
        if (!first) {
          sb.append(',');
        }
        first = false;
        quote(sb, String.valueOf(e.getKey()));
        sb.append(':');
        write(sb, e.getValue());
      }
      sb.append('}');
    } else if (v instanceof List) {
      sb.append('[');
      boolean first = true;
      for (Object o : (List<?>) v) {
        if (!first) {
          sb.append(',');
        }
        first = false;
        write(sb, o);
      }
      sb.append(']');
    } else {
      throw new IllegalArgumentException("not a JSON value: " + v.getClass().getName());
    }
  }

  private static final char[] HEX = "0123456789abcdef".toCharArray();

  static void quote(StringBuilder sb, String s) {
    sb.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"':
          sb.append("\\\"");
          break;
        case '\\':
          sb.append("\\\\");
          break;
        default:
          if (c < 0x20) {
            sb.append("\\u00").append(HEX[(c >> 4) & 0xf]).append(HEX[c & 0xf]);
          } else {
            sb.append(c);
          }
      }
    }
    sb.append('"');
  }

  private static final class Reader {
    final String s;
    int pos;

    Reader(String s) {
      this.s = s;
    }

    ProtocolException err(String what) {
      return new ProtocolException("invalid JSON: " + what + " at " + pos);
    }

    void skipWs() {
      while (pos < s.length()) {
        char c = s.charAt(pos);
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
          pos++;
        } else {
          break;
        }
      }
    }

    Object value(int depth) throws ProtocolException {
      if (depth > MAX_DEPTH) {
        throw err("nested too deep");
      }
      if (pos >= s.length()) {
        throw err("unexpected end");
      }
      char c = s.charAt(pos);
      switch (c) {
        case '{':
          return object(depth);
        case '[':
          return array(depth);
        case '"':
          return string();
        case 't':
          literal("true");
          return Boolean.TRUE;
        case 'f':
          literal("false");
          return Boolean.FALSE;
        case 'n':
          literal("null");
          return null;
        default:
          if (c == '-' || (c >= '0' && c <= '9')) {
            return number();
          }
          throw err("unexpected character '" + c + "'");
      }
    }

    void literal(String word) throws ProtocolException {
      if (!s.startsWith(word, pos)) {
        throw err("bad literal");
      }
      pos += word.length();
    }

    Map<String, Object> object(int depth) throws ProtocolException {
      pos++; // '{'
      Map<String, Object> m = new LinkedHashMap<>();
      skipWs();
      if (pos < s.length() && s.charAt(pos) == '}') {
        pos++;
        return m;
      }
      while (true) {
        skipWs();
        if (pos >= s.length() || s.charAt(pos) != '"') {
          throw err("expected a key");
        }
        String k = string();
        skipWs();
        if (pos >= s.length() || s.charAt(pos) != ':') {
          throw err("expected ':'");
        }
        pos++;
        skipWs();
        Object v = value(depth + 1);
        if (m.containsKey(k)) {
          throw err("duplicate key \"" + k + "\"");
        }
        m.put(k, v);
        skipWs();
        if (pos >= s.length()) {
          throw err("unexpected end in object");
        }
        char c = s.charAt(pos++);
        if (c == '}') {
          return m;
        }
        if (c != ',') {
          throw err("expected ',' or '}'");
        }
      }
    }

    List<Object> array(int depth) throws ProtocolException {
      pos++; // '['
      List<Object> l = new ArrayList<>();
      skipWs();
      if (pos < s.length() && s.charAt(pos) == ']') {
        pos++;
        return l;
      }
      while (true) {
        skipWs();
        l.add(value(depth + 1));
        skipWs();
        if (pos >= s.length()) {
          throw err("unexpected end in array");
        }
        char c = s.charAt(pos++);
        if (c == ']') {
          return l;
        }
        if (c != ',') {
          throw err("expected ',' or ']'");
        }
      }
    }

    String string() throws ProtocolException {
      pos++; // opening quote
      StringBuilder sb = null;
      int start = pos;
      while (true) {
        if (pos >= s.length()) {
          throw err("unterminated string");
        }
        char c = s.charAt(pos);
        if (c == '"') {
          String out = sb == null ? s.substring(start, pos) : sb.append(s, start, pos).toString();
          pos++;
          return out;
        }
        if (c < 0x20) {
          throw err("raw control character in string");
        }
        if (c == '\\') {
          if (sb == null) {
            sb = new StringBuilder();
          }
          sb.append(s, start, pos);
          pos++;
          if (pos >= s.length()) {
            throw err("unterminated escape");
          }
          char e = s.charAt(pos++);
          switch (e) {
            case '"':
              sb.append('"');
              break;
            case '\\':
              sb.append('\\');
              break;
            case '/':
              sb.append('/');
              break;
            case 'b':
              sb.append('\b');
              break;
            case 'f':
              sb.append('\f');
              break;
            case 'n':
              sb.append('\n');
              break;
            case 'r':
              sb.append('\r');
              break;
            case 't':
              sb.append('\t');
              break;
            case 'u':
              if (pos + 4 > s.length()) {
                throw err("short \\u escape");
              }
              int cp = 0;
              for (int i = 0; i < 4; i++) {
                int d = Character.digit(s.charAt(pos + i), 16);
                if (d < 0) {
                  throw err("bad \\u escape");
                }
                cp = cp * 16 + d;
              }
              pos += 4;
              sb.append((char) cp);
              break;
            default:
              throw err("bad escape \\" + e);
          }
          start = pos;
        } else {
          pos++;
        }
      }
    }

    Object number() throws ProtocolException {
      int start = pos;
      if (s.charAt(pos) == '-') {
        pos++;
      }
      int intStart = pos;
      while (pos < s.length() && Character.isDigit(s.charAt(pos)) && s.charAt(pos) < 128) {
        pos++;
      }
      if (pos == intStart) {
        throw err("bad number");
      }
      if (pos - intStart > 1 && s.charAt(intStart) == '0') {
        throw err("leading zero in number");
      }
      boolean integral = true;
      if (pos < s.length() && s.charAt(pos) == '.') {
        integral = false;
        pos++;
        int f = pos;
        while (pos < s.length() && s.charAt(pos) >= '0' && s.charAt(pos) <= '9') {
          pos++;
        }
        if (pos == f) {
          throw err("bad fraction");
        }
      }
      if (pos < s.length() && (s.charAt(pos) == 'e' || s.charAt(pos) == 'E')) {
        integral = false;
        pos++;
        if (pos < s.length() && (s.charAt(pos) == '+' || s.charAt(pos) == '-')) {
          pos++;
        }
        int e = pos;
        while (pos < s.length() && s.charAt(pos) >= '0' && s.charAt(pos) <= '9') {
          pos++;
        }
        if (pos == e) {
          throw err("bad exponent");
        }
      }
      String t = s.substring(start, pos);
      if (!integral) {
        return Double.parseDouble(t);
      }
      if (t.length() <= 18) {
        return Long.parseLong(t);
      }
      BigInteger b = new BigInteger(t);
      if (b.bitLength() < 64) {
        return b.longValue();
      }
      return b;
    }
  }
}
