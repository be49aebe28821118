package io.ipush.client;

/**
 * The server refused a connect or ended a stream with {@code {"error":reason}}: {@code status} is
 * the HTTP status of a refused connect (400, 401, 503…), or 0 for a stream-ending error chunk,
 * frame or event.
 */
public final class ServerErrorException extends Exception {
  private static final long serialVersionUID = 1L;
  private final int status;
  private final String reason;

  public ServerErrorException(int status, String reason) {
    super(status == 0 ? "stream ended by the server: " + reason : "HTTP " + status + ": " + reason);
    this.status = status;
    this.reason = reason;
  }

  public int status() {
    return status;
  }

  public String reason() {
    return reason;
  }
}
