import CryptoKit
import Foundation
import OffstKit
import Security

/// The wallet's key from the iOS Keychain: a random 32-byte secret kept in the Keychain (this
/// device only, after first unlock). The key for a salt is HMAC-SHA256(secret, salt): the same
/// salt gives the same key, and nothing secret is in the app's files.
final class KeychainKeys: KeyStore, @unchecked Sendable {
    private let account = "offst-wallet"

    func key(salt: Data) throws -> Data {
        let secret = try loadOrCreate()
        let mac = HMAC<SHA256>.authenticationCode(for: salt, using: SymmetricKey(data: secret))
        return Data(mac)
    }

    private func loadOrCreate() throws -> Data {
        let query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrAccount as String: account,
            kSecReturnData as String: true,
        ]
        var item: CFTypeRef?
        let found = SecItemCopyMatching(query as CFDictionary, &item)
        if found == errSecSuccess, let data = item as? Data { return data }
        guard found == errSecItemNotFound else {
            throw KeyStoreError.Unavailable(reason: "the Keychain refused (status \(found))")
        }
        var bytes = [UInt8](repeating: 0, count: 32)
        guard SecRandomCopyBytes(kSecRandomDefault, 32, &bytes) == errSecSuccess else {
            throw KeyStoreError.Unavailable(reason: "no randomness for a new key")
        }
        let add: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrAccount as String: account,
            kSecAttrAccessible as String: kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly,
            kSecValueData as String: Data(bytes),
        ]
        let status = SecItemAdd(add as CFDictionary, nil)
        guard status == errSecSuccess else {
            throw KeyStoreError.Unavailable(reason: "could not save the key in the Keychain (status \(status))")
        }
        return Data(bytes)
    }
}
