#pragma once
// The ledger's schema: the migrations that bring a database file to
// Ledger::kSchemaVersion (the text is in schema.cpp). Internal to kaio_state.

namespace kaio::state {
namespace sql {
class Database;
}

// The data plane's consumers table (docs/data-plane.md), created on first use.
extern const char* const kConsumersTable;

// The schema version the database holds (PRAGMA user_version).
int schema_version(sql::Database& db);
// Brings the database to Ledger::kSchemaVersion, one transaction per version;
// throws Error(corrupt) for a database newer than this kaiod understands.
void migrate(sql::Database& db);

}  // namespace kaio::state
