// Credentials of a git repository over HTTP(S): where they come from (the auth option, a credentials file,
// the URL, the environment), and keeping every secret seen out of messages.
import fs from 'node:fs';
import type { GitAuth as IsoGitAuth } from 'isomorphic-git';
import { DragonflyError } from '../../schemas/errors.js';

/** Credentials: a user and password, or a token (sent as the password of `username`, default `x-access-token`). */
export interface GitCredentials {
  username?: string;
  password?: string;
  token?: string;
}

/** Environment variables read for credentials. */
export const GIT_ENV = {
  username: 'DRAGONFLY_GIT_USERNAME',
  password: 'DRAGONFLY_GIT_PASSWORD',
  token: 'DRAGONFLY_GIT_TOKEN',
} as const;

const TOKEN_USERNAME = 'x-access-token';

/** Replace the userinfo of every URL in `text` by `***`. */
export function sanitizeUrl(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/\s@]*@/gi, '$1***@');
}

/** The URL without its userinfo, and the credentials that userinfo held (percent-decoded). */
export function stripUserinfo(url: string): { url: string; auth?: GitCredentials } {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/\s@]*)@(.*)$/is.exec(url);
  if (!m) return { url };
  const userinfo = m[2]!;
  const i = userinfo.indexOf(':');
  const dec = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  const auth: GitCredentials = i === -1 ? { username: dec(userinfo) } : { username: dec(userinfo.slice(0, i)), password: dec(userinfo.slice(i + 1)) };
  return { url: m[1]! + m[3]!, auth: auth.username || auth.password ? auth : undefined };
}

export interface CredentialOptions {
  /** The repository URL for messages (userinfo already replaced by ***). */
  displayUrl: string;
  /** Explicit credentials (take precedence over credentialsFile, the URL, and the environment). */
  auth?: GitCredentials;
  /** File whose first line is `user:password` or a token. Read at every authentication. */
  credentialsFile?: string;
  /** The credentials that were in the URL. */
  urlAuth?: GitCredentials;
  /** Environment for DRAGONFLY_GIT_USERNAME / DRAGONFLY_GIT_PASSWORD / DRAGONFLY_GIT_TOKEN. Default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** The credentials of one repository, looked up at every authentication, and every secret they showed. */
export class CredentialResolver {
  private readonly secrets = new Set<string>();

  constructor(private readonly options: CredentialOptions) {
    if (options.urlAuth?.password) this.secrets.add(options.urlAuth.password);
  }

  /** Credentials, in order: the auth option, the credentials file, the URL, the environment. */
  resolve(): { auth: IsoGitAuth; source: string } | undefined {
    const env = this.options.env ?? process.env;
    const envUser = env[GIT_ENV.username] || undefined;
    const withToken = (token: string, username = envUser ?? TOKEN_USERNAME) => ({ username, password: token });
    const remember = (auth: IsoGitAuth, source: string) => {
      if (auth.password) this.secrets.add(auth.password);
      return { auth, source };
    };
    const o = this.options.auth;
    if (o && (o.token || o.password || o.username)) {
      return remember(o.token ? withToken(o.token, o.username ?? TOKEN_USERNAME) : { username: o.username ?? '', password: o.password ?? '' }, 'the auth option');
    }
    if (this.options.credentialsFile) {
      const file = this.options.credentialsFile;
      let line: string;
      try {
        line = (fs.readFileSync(file, 'utf8').split(/\r?\n/, 1)[0] ?? '').trim();
      } catch (e) {
        throw new DragonflyError('DF_ERR_GIT_AUTH', `cannot read the git credentials file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, {
          url: this.options.displayUrl,
          file,
        });
      }
      if (!line) throw new DragonflyError('DF_ERR_GIT_AUTH', `the git credentials file ${file} is empty`, { url: this.options.displayUrl, file }, 'write `user:password` or a token on its first line');
      const i = line.indexOf(':');
      const auth = i === -1 ? withToken(line) : { username: line.slice(0, i), password: line.slice(i + 1) };
      return remember(auth, `the credentials file ${file}`);
    }
    const urlAuth = this.options.urlAuth;
    if (urlAuth) return remember({ username: urlAuth.username ?? '', password: urlAuth.password ?? '' }, 'the URL');
    const password = env[GIT_ENV.password];
    if (password) return remember({ username: envUser ?? '', password }, `${GIT_ENV.username}/${GIT_ENV.password}`);
    const token = env[GIT_ENV.token];
    if (token) return remember(withToken(token), GIT_ENV.token);
    return undefined;
  }

  /** Remove every known secret and URL userinfo from a message. */
  redact(text: string): string {
    let out = sanitizeUrl(text);
    for (const s of this.secrets) if (s.length >= 3) out = out.split(s).join('***');
    return out;
  }
}
