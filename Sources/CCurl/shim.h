#ifndef HERALD_CCURL_SHIM_H
#define HERALD_CCURL_SHIM_H
// Swift cannot call C variadic functions, and curl_easy_setopt / curl_easy_getinfo / curl_multi_setopt are
// variadic. These typed, non-variadic wrappers are the only way the Swift side touches them: one per
// parameter kind, so the compiler checks what Swift passes.
#include <curl/curl.h>
// What the engine watches curl's sockets with (the multi_socket API): Swift's Glibc module leaves these out.
#include <sys/epoll.h>
#include <sys/eventfd.h>

static inline CURLcode CCurl_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode CCurl_easy_setopt_pointer(CURL *handle, CURLoption option, const void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode CCurl_easy_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode CCurl_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode CCurl_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode CCurl_easy_setopt_write_function(CURL *handle, curl_write_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback);
}

static inline CURLcode CCurl_easy_setopt_opensocket_function(CURL *handle, curl_opensocket_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_OPENSOCKETFUNCTION, callback);
}

static inline CURLcode CCurl_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLMcode CCurl_multi_setopt_long(CURLM *handle, CURLMoption option, long value) {
    return curl_multi_setopt(handle, option, value);
}

// The multi_socket API (the engine watches curl's sockets itself, on epoll): curl_multi_setopt is variadic too.
static inline CURLMcode CCurl_multi_setopt_pointer(CURLM *handle, CURLMoption option, void *value) {
    return curl_multi_setopt(handle, option, value);
}

static inline CURLMcode CCurl_multi_setopt_socket_function(CURLM *handle, curl_socket_callback callback) {
    return curl_multi_setopt(handle, CURLMOPT_SOCKETFUNCTION, callback);
}

static inline CURLMcode CCurl_multi_setopt_timer_function(CURLM *handle, curl_multi_timer_callback callback) {
    return curl_multi_setopt(handle, CURLMOPT_TIMERFUNCTION, callback);
}

/// CURL_SOCKET_TIMEOUT, a macro defined through another macro, which Swift does not import.
static inline curl_socket_t CCurl_socket_timeout(void) { return CURL_SOCKET_TIMEOUT; }

/// The socket-address fields Herald's address policy needs, without Swift touching the C struct layout.
static inline int CCurl_sockaddr_family(const struct curl_sockaddr *address) { return address->family; }
static inline int CCurl_sockaddr_socktype(const struct curl_sockaddr *address) { return address->socktype; }
static inline int CCurl_sockaddr_protocol(const struct curl_sockaddr *address) { return address->protocol; }
static inline const struct sockaddr *CCurl_sockaddr_addr(const struct curl_sockaddr *address) {
    return &address->addr;
}

#endif
