package io.ipush.client;

/**
 * Gives the password or token for the next connect. Called before every (re)connect on the client's
 * connection thread, so a JWT (for {@code --auth=jwt}) can be refreshed here.
 */
@FunctionalInterface
public interface TokenProvider {
  String token() throws Exception;
}
