/*
 * csum.c — btrfs checksum dispatch: sizes, names, and the four algorithms (crc32c, xxhash64 with
 * seed 0, sha256, blake2b-256), each written into a UBT_CSUM_MAX buffer as btrfs stores it.
 */
#include <pthread.h>
#include <strings.h>

#include <sodium.h>
#include <xxhash.h>

#include "csum.h"

/* super.csum_type values (the same numbers as BTRFS_CSUM_TYPE_* in format/; codec sits below it). */
enum {
	CSUM_CRC32C = 0,
	CSUM_XXHASH64 = 1,
	CSUM_SHA256 = 2,
	CSUM_BLAKE2B = 3,
};

static const struct {
	const char *name;
	int size;
} csum_types[] = {
	[CSUM_CRC32C] = { "crc32c", 4 },
	[CSUM_XXHASH64] = { "xxhash64", 8 },
	[CSUM_SHA256] = { "sha256", 32 },
	[CSUM_BLAKE2B] = { "blake2b", 32 },
};

static const struct {
	const char *alias;
	u16 type;
} csum_aliases[] = {
	{ "crc32c", CSUM_CRC32C }, { "xxhash", CSUM_XXHASH64 }, { "xxhash64", CSUM_XXHASH64 },
	{ "sha256", CSUM_SHA256 }, { "blake2", CSUM_BLAKE2B },	{ "blake2b", CSUM_BLAKE2B },
};

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_status;

static void sodium_setup(void)
{
	/* 0 = initialised now, 1 = already initialised elsewhere, -1 = failure. */
	sodium_status = sodium_init();
}

int ubt_csum_size(u16 type)
{
	if (type >= ARRAY_SIZE(csum_types))
		return -EINVAL;
	return csum_types[type].size;
}

const char *ubt_csum_name(u16 type)
{
	if (type >= ARRAY_SIZE(csum_types))
		return NULL;
	return csum_types[type].name;
}

int ubt_csum_type_from_name(const char *name)
{
	if (!name)
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(csum_aliases); i++)
		if (!strcasecmp(name, csum_aliases[i].alias))
			return csum_aliases[i].type;
	return -EINVAL;
}

int ubt_csum(u16 type, const void *data, size_t len, u8 out[UBT_CSUM_MAX])
{
	memset(out, 0, UBT_CSUM_MAX);
	switch (type) {
	case CSUM_CRC32C:
		put_le32(out, ~ubt_crc32c(~0u, data, len));
		return 0;
	case CSUM_XXHASH64:
		put_le64(out, XXH64(data, len, 0));
		return 0;
	case CSUM_SHA256:
	case CSUM_BLAKE2B:
		pthread_once(&sodium_once, sodium_setup);
		if (sodium_status < 0)
			return -ENOMEM;
		if (type == CSUM_SHA256)
			crypto_hash_sha256(out, data, len);
		else if (crypto_generichash(out, 32, data, len, NULL, 0) != 0)
			return -EINVAL;
		return 0;
	default:
		return -EINVAL;
	}
}
