#pragma once
// The names the key store gives its files (SPEC section 5). One place: the store writes them,
// the operator commands read them, and identifier validation refuses them as ids (SPEC 3.5).

namespace pa::keystore {

// Inside a device folder.
inline constexpr const char* kPrivateKeyFile = "sensor_private.pem";
inline constexpr const char* kPublicKeyFile = "sensor_public.pem";
inline constexpr const char* kPrivateBackupFile = "sensor_private.prev.pem";
inline constexpr const char* kPublicBackupFile = "sensor_public.prev.pem";
inline constexpr const char* kCertificateFile = "sensor_cert.pem";
inline constexpr const char* kCertificateBackupFile = "sensor_cert.prev.pem";

// Every file a device folder may hold, the private key first (removed first: from then on the
// device has no keys, whatever happens next).
inline constexpr const char* kDeviceFiles[] = {kPrivateKeyFile,    kPublicKeyFile,
                                               kPrivateBackupFile, kPublicBackupFile,
                                               kCertificateFile,   kCertificateBackupFile};

// In the key store root (and the state folder): the single-instance lock, the one file there
// that is not a folder. Its leading dot makes it an invalid identifier, so listings skip it.
inline constexpr const char* kLockFile = ".provision-agent.lock";

}  // namespace pa::keystore
