namespace uplinkd {
// The version string printed by `uplinkd --version` and `uplinkctl --version`.
const char* version() { return "0.1.0"; }
}  // namespace uplinkd
