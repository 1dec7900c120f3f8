# What the grpo::hf component needs: PCRE2 (8-bit, for tokenizer.json's regular expressions) and utf8proc (Unicode
# normalization), found with pkg-config as the imported targets PkgConfig::GRPO_PCRE2 and PkgConfig::GRPO_UTF8PROC
# that grpo::hf links. Included by the build tree and, once installed, by grpo-config.cmake before
# grpo-hf-targets.cmake; when either is missing it sets grpo_hf_FOUND FALSE and grpo_NOT_FOUND_MESSAGE naming it
# (Debian: apt-get install pkg-config libpcre2-dev libutf8proc-dev).
if(TARGET PkgConfig::GRPO_PCRE2 AND TARGET PkgConfig::GRPO_UTF8PROC)
  return()
endif()
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(GRPO_PCRE2 QUIET IMPORTED_TARGET GLOBAL libpcre2-8)
  pkg_check_modules(GRPO_UTF8PROC QUIET IMPORTED_TARGET GLOBAL libutf8proc)
endif()
set(_grpo_hf_missing "")
if(NOT PkgConfig_FOUND)
  set(_grpo_hf_missing "pkg-config")
elseif(NOT TARGET PkgConfig::GRPO_PCRE2)
  set(_grpo_hf_missing "PCRE2 (pkg-config module libpcre2-8)")
elseif(NOT TARGET PkgConfig::GRPO_UTF8PROC)
  set(_grpo_hf_missing "utf8proc (pkg-config module libutf8proc)")
endif()
if(_grpo_hf_missing)
  set(grpo_hf_FOUND FALSE)
  set(grpo_NOT_FOUND_MESSAGE "grpo: component 'hf' needs ${_grpo_hf_missing} (Debian: apt-get install pkg-config libpcre2-dev libutf8proc-dev)")
endif()
