/*
 * chat_schema: the chat role's tables, one migration list with a script
 * per backend. Version 1 keeps FaltuBaat's users table exactly (CREATE
 * TABLE IF NOT EXISTS, so an existing FaltuBaat database is adopted as
 * it is) and adds the token version, rooms, memberships, messages, read
 * markers, stream keys and streams. Timestamps the role writes are epoch
 * milliseconds computed by the server; users.created_at/last_login stay
 * FaltuBaat's "YYYY-MM-DD HH:MM:SS" UTC text.
 */
#include "config.h"

#include "chat.h"

static const char v1_sqlite[] =
    "CREATE TABLE IF NOT EXISTS users ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " username TEXT UNIQUE NOT NULL,"
    " password TEXT NOT NULL,"
    " first_name TEXT DEFAULT '',"
    " last_name TEXT DEFAULT '',"
    " gender TEXT NOT NULL CHECK(gender IN ('male', 'female', 'other')),"
    " about TEXT DEFAULT '',"
    " created_at DATETIME DEFAULT CURRENT_TIMESTAMP,"
    " last_login DATETIME,"
    " is_active INTEGER DEFAULT 1);"
    "CREATE INDEX IF NOT EXISTS idx_users_username ON users(username);"
    "ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE rooms ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT UNIQUE NOT NULL,"
    " title TEXT NOT NULL DEFAULT '',"
    " kind TEXT NOT NULL DEFAULT 'room' CHECK(kind IN ('room', 'dm')),"
    " created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE memberships ("
    " room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " joined_at INTEGER NOT NULL,"
    " PRIMARY KEY (room_id, user_id));"
    "CREATE INDEX memberships_user ON memberships(user_id);"
    "CREATE TABLE messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,"
    " sender_id INTEGER REFERENCES users(id) ON DELETE SET NULL,"
    " body TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " client_id TEXT);"
    "CREATE INDEX messages_room ON messages(room_id, id);"
    "CREATE UNIQUE INDEX messages_client ON messages(sender_id, client_id);"
    "CREATE TABLE reads ("
    " room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " message_id INTEGER NOT NULL,"
    " PRIMARY KEY (room_id, user_id));"
    "CREATE TABLE stream_keys ("
    " user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,"
    " key_hash TEXT UNIQUE NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE streams ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " playback_id TEXT UNIQUE NOT NULL,"
    " started_at INTEGER NOT NULL,"
    " ended_at INTEGER);"
    "CREATE UNIQUE INDEX streams_live ON streams(user_id)"
    " WHERE ended_at IS NULL;"
    "INSERT INTO rooms (name, title, kind, created_at) VALUES"
    " ('general', 'General', 'room', 0), ('tech', 'Tech Talk', 'room', 0),"
    " ('random', 'Random', 'room', 0);";

static const char v1_pg[] =
    "CREATE TABLE IF NOT EXISTS users ("
    " id BIGSERIAL PRIMARY KEY,"
    " username TEXT UNIQUE NOT NULL,"
    " password TEXT NOT NULL,"
    " first_name TEXT DEFAULT '',"
    " last_name TEXT DEFAULT '',"
    " gender TEXT NOT NULL CHECK(gender IN ('male', 'female', 'other')),"
    " about TEXT DEFAULT '',"
    " created_at TEXT DEFAULT to_char(now() AT TIME ZONE 'UTC',"
    " 'YYYY-MM-DD HH24:MI:SS'),"
    " last_login TEXT,"
    " is_active INTEGER DEFAULT 1);"
    "CREATE INDEX IF NOT EXISTS idx_users_username ON users(username);"
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS token_version BIGINT NOT NULL"
    " DEFAULT 0;"
    "CREATE TABLE rooms ("
    " id BIGSERIAL PRIMARY KEY,"
    " name TEXT UNIQUE NOT NULL,"
    " title TEXT NOT NULL DEFAULT '',"
    " kind TEXT NOT NULL DEFAULT 'room' CHECK(kind IN ('room', 'dm')),"
    " created_by BIGINT REFERENCES users(id) ON DELETE SET NULL,"
    " created_at BIGINT NOT NULL);"
    "CREATE TABLE memberships ("
    " room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,"
    " user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " joined_at BIGINT NOT NULL,"
    " PRIMARY KEY (room_id, user_id));"
    "CREATE INDEX memberships_user ON memberships(user_id);"
    "CREATE TABLE messages ("
    " id BIGSERIAL PRIMARY KEY,"
    " room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,"
    " sender_id BIGINT REFERENCES users(id) ON DELETE SET NULL,"
    " body TEXT NOT NULL,"
    " created_at BIGINT NOT NULL,"
    " client_id TEXT);"
    "CREATE INDEX messages_room ON messages(room_id, id);"
    "CREATE UNIQUE INDEX messages_client ON messages(sender_id, client_id);"
    "CREATE TABLE reads ("
    " room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,"
    " user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " message_id BIGINT NOT NULL,"
    " PRIMARY KEY (room_id, user_id));"
    "CREATE TABLE stream_keys ("
    " user_id BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,"
    " key_hash TEXT UNIQUE NOT NULL,"
    " created_at BIGINT NOT NULL);"
    "CREATE TABLE streams ("
    " id BIGSERIAL PRIMARY KEY,"
    " user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " playback_id TEXT UNIQUE NOT NULL,"
    " started_at BIGINT NOT NULL,"
    " ended_at BIGINT);"
    "CREATE UNIQUE INDEX streams_live ON streams(user_id)"
    " WHERE ended_at IS NULL;"
    "INSERT INTO rooms (name, title, kind, created_at) VALUES"
    " ('general', 'General', 'room', 0), ('tech', 'Tech Talk', 'room', 0),"
    " ('random', 'Random', 'room', 0);";

/* A stream remembers the key it was started with: nginx-rtmp names the
 * stream by that key in on_update and on_publish_done even after the
 * rename, and the user may have rotated the key meanwhile. */
static const char v2[] = "ALTER TABLE streams ADD COLUMN key_hash TEXT;"
                         "CREATE INDEX streams_key ON streams(key_hash);";

const struct pm_db_migration chat_migrations[] = {
    {1, "chat accounts, rooms, messages, streams", v1_sqlite, v1_pg},
    {2, "streams remember their key", v2, v2},
};
const size_t chat_nmigrations =
    sizeof chat_migrations / sizeof chat_migrations[0];
