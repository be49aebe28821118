package io.ipush.client;

import java.io.IOException;

/**
 * An admin request answered with a 4xx/5xx status; {@link #reason()} is the server's {@code error}.
 */
public final class AdminException extends IOException {
  private static final long serialVersionUID = 1L;
  private final int status;
  private final String reason;

  public AdminException(int status, String reason) {
    super("HTTP " + status + ": " + reason);
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
