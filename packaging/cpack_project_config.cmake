# Read by cpack for each generator. A .deb installs under /usr, so the agent must have been built
# with that prefix: its compiled-in plugin folder (PA_DEFAULT_PLUGIN_DIR) is where the package
# puts the plugins.
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_PACKAGING_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR
          "the Debian package needs a build configured with -DCMAKE_INSTALL_PREFIX=/usr "
          "(this one has ${CPACK_PACKAGING_INSTALL_PREFIX})")
endif()
# dpkg-shlibdeps looks for a cross build's libraries in the target's multiarch folders.
if(CPACK_DEBIAN_PACKAGE_ARCHITECTURE)
  set(ENV{DEB_HOST_ARCH} ${CPACK_DEBIAN_PACKAGE_ARCHITECTURE})
endif()
