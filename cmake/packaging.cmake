# `make package` (cpack -G DEB): one .deb with kaiod, kaioctl and kaio-mkdata,
# the unit, the sysusers and tmpfiles snippets, the example configs, and
# /etc/kaio/kaiod.json (a conffile) where the unit looks for it. The
# maintainer scripts (cmake/deb/) are filled with the same paths as the install
# rules, so what they name is what the package holds (tests/daemon/package_test.cpp).
include(GNUInstallDirs)

set(KAIO_DEB_PREFIX "/usr")
set(KAIO_DEB_SYSUSERS "${KAIO_DEB_PREFIX}/lib/sysusers.d/kaio.conf")
set(KAIO_DEB_TMPFILES "${KAIO_DEB_PREFIX}/lib/tmpfiles.d/kaio.conf")
set(KAIO_DEB_UNIT "${KAIO_DEB_PREFIX}/lib/systemd/system/kaiod.service")
set(KAIO_DEB_CONFIG "/etc/kaio/kaiod.json")

# The config the unit reads. Only the package installs it: `cmake --install`
# never writes to /etc (an operator's own config would be overwritten), so it
# is a component left out of a plain install and named in CPACK_INSTALL_CMAKE_PROJECTS.
install(FILES ${PROJECT_SOURCE_DIR}/configs/llava-video-178k.json DESTINATION /etc/kaio RENAME kaiod.json
        COMPONENT deb_conffiles EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/kaio)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/kaio/docs FILES_MATCHING PATTERN "*.md")

set(deb_dir ${CMAKE_BINARY_DIR}/deb)
foreach(script postinst prerm postrm)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/deb/${script}.in ${deb_dir}/${script} @ONLY
                 FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
endforeach()
file(WRITE ${deb_dir}/conffiles "${KAIO_DEB_CONFIG}\n")

set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "kaio")
set(CPACK_PACKAGE_VENDOR "kaio")
set(CPACK_PACKAGE_CONTACT "kaio maintainers <kaio@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "streams video datasets from the Hugging Face Hub and trains on them within a disk budget")
set(CPACK_PACKAGE_DESCRIPTION
    "kaiod streams a video dataset from the Hugging Face Hub, decodes clips into a bounded disk cache, trains a masked video autoencoder on them and deletes each clip once a checkpoint covers it. kaioctl watches and controls it. Runs as the systemd service kaiod.")
set(CPACK_PACKAGING_INSTALL_PREFIX "${KAIO_DEB_PREFIX}")
set(CPACK_INSTALL_CMAKE_PROJECTS "${CMAKE_BINARY_DIR};${PROJECT_NAME};ALL;/;${CMAKE_BINARY_DIR};${PROJECT_NAME};deb_conffiles;/")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "science")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${deb_dir}/postinst;${deb_dir}/prerm;${deb_dir}/postrm;${deb_dir}/conffiles")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_STRIP_FILES TRUE)  # debug info stays in the build tree
include(CPack)
