// The Offst Android app. Not built on the project's CI machine (no Android SDK or Gradle
// there); see docs/mobile.md for how to build it and what is tested where.
pluginManagement {
    repositories { google(); mavenCentral(); gradlePluginPortal() }
}
dependencyResolutionManagement {
    repositories { google(); mavenCentral() }
}
rootProject.name = "offst"
include(":app", ":viewmodels")
