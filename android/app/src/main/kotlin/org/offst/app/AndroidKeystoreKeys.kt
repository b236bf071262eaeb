package org.offst.app

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import javax.crypto.KeyGenerator
import javax.crypto.Mac
import javax.crypto.SecretKey
import org.offst.ffi.KeyStore
import org.offst.ffi.KeyStoreException

/**
 * The wallet's key from the Android Keystore: an HMAC-SHA256 key made inside the Keystore
 * (hardware-backed where the phone has it) that never leaves it. The wallet's 32-byte key for a
 * salt is HMAC(salt): the same salt always gives the same key, and nothing secret is on disk.
 */
class AndroidKeystoreKeys(private val alias: String = "offst-wallet") : KeyStore {
    private fun secret(): SecretKey {
        val ks = java.security.KeyStore.getInstance("AndroidKeyStore").apply { load(null) }
        (ks.getKey(alias, null) as? SecretKey)?.let { return it }
        val gen = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_HMAC_SHA256, "AndroidKeyStore")
        gen.init(KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_SIGN).build())
        return gen.generateKey()
    }

    override fun key(salt: ByteArray): ByteArray = try {
        Mac.getInstance("HmacSHA256").run {
            init(secret())
            doFinal(salt)
        }
    } catch (e: Exception) {
        throw KeyStoreException.Unavailable("the Android Keystore refused: ${e.message}")
    }
}
