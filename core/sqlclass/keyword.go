package sqlclass

// keyword identifies the key words the classifier looks at. Every other
// word is kwNone.
type keyword uint8

const (
	kwNone keyword = iota
	kwAbort
	kwAccess
	kwAll
	kwAlter
	kwAnalyse
	kwAnalyze
	kwAs
	kwAtomic
	kwAuthorization
	kwBegin
	kwCall
	kwCase
	kwCharacteristics
	kwCheckpoint
	kwClass
	kwClose
	kwCluster
	kwComment
	kwCommit
	kwConstraint
	kwConstraints
	kwCopy
	kwCreate
	kwCurrent
	kwData
	kwDeallocate
	kwDeclare
	kwDefault
	kwDelete
	kwDiscard
	kwDo
	kwDrop
	kwEnd
	kwEvent
	kwExecute
	kwExplain
	kwFalse
	kwFamily
	kwFetch
	kwFor
	kwForeign
	kwFrom
	kwFunction
	kwGlobal
	kwGrant
	kwGroup
	kwHold
	kwImport
	kwInsert
	kwInto
	kwKey
	kwLarge
	kwListen
	kwLoad
	kwLocal
	kwLock
	kwMapping
	kwMaterialized
	kwMerge
	kwMove
	kwNames
	kwNo
	kwNoneWord // the key word NONE
	kwNotify
	kwOff
	kwOn
	kwOperator
	kwOption
	kwOr
	kwPlans
	kwPolicy
	kwPrepare
	kwPrepared
	kwPrivileges
	kwProcedural
	kwProcedure
	kwReassign
	kwRecursive
	kwRefresh
	kwReindex
	kwRelease
	kwReplace
	kwReset
	kwRevoke
	kwRole
	kwRollback
	kwRule
	kwSavepoint
	kwSchema
	kwSearch
	kwSecurity
	kwSelect
	kwSequence
	kwSequences
	kwSet
	kwSession
	kwShare
	kwShow
	kwStart
	kwTable
	kwTemp
	kwTemporary
	kwText
	kwTime
	kwTo
	kwTransaction
	kwTrigger
	kwTrue
	kwTruncate
	kwTrusted
	kwUnique
	kwUnlisten
	kwUnlogged
	kwUpdate
	kwUser
	kwVacuum
	kwValues
	kwVerbose
	kwView
	kwWith
	kwWithout
	kwXML
	kwZone
)

// maxKeywordLen is the length of the longest key word in lookupKeyword.
const maxKeywordLen = len("CHARACTERISTICS")

// lookupKeyword returns the key word that the unquoted word w spells, in
// any case, or kwNone.
func lookupKeyword(w string) keyword {
	if len(w) < 2 || len(w) > maxKeywordLen {
		return kwNone
	}
	var buf [maxKeywordLen]byte
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(w)]) {
	case "ABORT":
		return kwAbort
	case "ACCESS":
		return kwAccess
	case "ALL":
		return kwAll
	case "ALTER":
		return kwAlter
	case "ANALYSE":
		return kwAnalyse
	case "ANALYZE":
		return kwAnalyze
	case "AS":
		return kwAs
	case "ATOMIC":
		return kwAtomic
	case "AUTHORIZATION":
		return kwAuthorization
	case "BEGIN":
		return kwBegin
	case "CALL":
		return kwCall
	case "CASE":
		return kwCase
	case "CHARACTERISTICS":
		return kwCharacteristics
	case "CHECKPOINT":
		return kwCheckpoint
	case "CLASS":
		return kwClass
	case "CLOSE":
		return kwClose
	case "CLUSTER":
		return kwCluster
	case "COMMENT":
		return kwComment
	case "COMMIT":
		return kwCommit
	case "CONSTRAINT":
		return kwConstraint
	case "CONSTRAINTS":
		return kwConstraints
	case "COPY":
		return kwCopy
	case "CREATE":
		return kwCreate
	case "CURRENT":
		return kwCurrent
	case "DATA":
		return kwData
	case "DEALLOCATE":
		return kwDeallocate
	case "DECLARE":
		return kwDeclare
	case "DEFAULT":
		return kwDefault
	case "DELETE":
		return kwDelete
	case "DISCARD":
		return kwDiscard
	case "DO":
		return kwDo
	case "DROP":
		return kwDrop
	case "END":
		return kwEnd
	case "EVENT":
		return kwEvent
	case "EXECUTE":
		return kwExecute
	case "EXPLAIN":
		return kwExplain
	case "FALSE":
		return kwFalse
	case "FAMILY":
		return kwFamily
	case "FETCH":
		return kwFetch
	case "FOR":
		return kwFor
	case "FOREIGN":
		return kwForeign
	case "FROM":
		return kwFrom
	case "FUNCTION":
		return kwFunction
	case "GLOBAL":
		return kwGlobal
	case "GRANT":
		return kwGrant
	case "GROUP":
		return kwGroup
	case "HOLD":
		return kwHold
	case "IMPORT":
		return kwImport
	case "INSERT":
		return kwInsert
	case "INTO":
		return kwInto
	case "KEY":
		return kwKey
	case "LARGE":
		return kwLarge
	case "LISTEN":
		return kwListen
	case "LOAD":
		return kwLoad
	case "LOCAL":
		return kwLocal
	case "LOCK":
		return kwLock
	case "MAPPING":
		return kwMapping
	case "MATERIALIZED":
		return kwMaterialized
	case "MERGE":
		return kwMerge
	case "MOVE":
		return kwMove
	case "NAMES":
		return kwNames
	case "NO":
		return kwNo
	case "NONE":
		return kwNoneWord
	case "NOTIFY":
		return kwNotify
	case "OFF":
		return kwOff
	case "ON":
		return kwOn
	case "OPERATOR":
		return kwOperator
	case "OPTION":
		return kwOption
	case "OR":
		return kwOr
	case "PLANS":
		return kwPlans
	case "POLICY":
		return kwPolicy
	case "PREPARE":
		return kwPrepare
	case "PREPARED":
		return kwPrepared
	case "PRIVILEGES":
		return kwPrivileges
	case "PROCEDURAL":
		return kwProcedural
	case "PROCEDURE":
		return kwProcedure
	case "REASSIGN":
		return kwReassign
	case "RECURSIVE":
		return kwRecursive
	case "REFRESH":
		return kwRefresh
	case "REINDEX":
		return kwReindex
	case "RELEASE":
		return kwRelease
	case "REPLACE":
		return kwReplace
	case "RESET":
		return kwReset
	case "REVOKE":
		return kwRevoke
	case "ROLE":
		return kwRole
	case "ROLLBACK":
		return kwRollback
	case "RULE":
		return kwRule
	case "SAVEPOINT":
		return kwSavepoint
	case "SCHEMA":
		return kwSchema
	case "SEARCH":
		return kwSearch
	case "SECURITY":
		return kwSecurity
	case "SELECT":
		return kwSelect
	case "SEQUENCE":
		return kwSequence
	case "SEQUENCES":
		return kwSequences
	case "SET":
		return kwSet
	case "SESSION":
		return kwSession
	case "SHARE":
		return kwShare
	case "SHOW":
		return kwShow
	case "START":
		return kwStart
	case "TABLE":
		return kwTable
	case "TEMP":
		return kwTemp
	case "TEMPORARY":
		return kwTemporary
	case "TEXT":
		return kwText
	case "TIME":
		return kwTime
	case "TO":
		return kwTo
	case "TRANSACTION":
		return kwTransaction
	case "TRIGGER":
		return kwTrigger
	case "TRUE":
		return kwTrue
	case "TRUNCATE":
		return kwTruncate
	case "TRUSTED":
		return kwTrusted
	case "UNIQUE":
		return kwUnique
	case "UNLISTEN":
		return kwUnlisten
	case "UNLOGGED":
		return kwUnlogged
	case "UPDATE":
		return kwUpdate
	case "USER":
		return kwUser
	case "VACUUM":
		return kwVacuum
	case "VALUES":
		return kwValues
	case "VERBOSE":
		return kwVerbose
	case "VIEW":
		return kwView
	case "WITH":
		return kwWith
	case "WITHOUT":
		return kwWithout
	case "XML":
		return kwXML
	case "ZONE":
		return kwZone
	}
	return kwNone
}

// restKeyword is lookupKeyword for the few key words scanRest looks at,
// which it meets for every word of every statement: FOR, KEY, NO, SHARE,
// INSERT, UPDATE, DELETE, MERGE, INTO, ON, COMMIT, DROP. It returns kwNone
// for any other word.
func restKeyword(w string) keyword {
	switch len(w) {
	case 2:
		if equalUpper(w, "NO") {
			return kwNo
		}
		if equalUpper(w, "ON") {
			return kwOn
		}
	case 3:
		if equalUpper(w, "FOR") {
			return kwFor
		}
		if equalUpper(w, "KEY") {
			return kwKey
		}
	case 4:
		if equalUpper(w, "INTO") {
			return kwInto
		}
		if equalUpper(w, "DROP") {
			return kwDrop
		}
	case 5:
		if equalUpper(w, "SHARE") {
			return kwShare
		}
		if equalUpper(w, "MERGE") {
			return kwMerge
		}
	case 6:
		switch w[0] | 0x20 {
		case 'i':
			if equalUpper(w, "INSERT") {
				return kwInsert
			}
		case 'u':
			if equalUpper(w, "UPDATE") {
				return kwUpdate
			}
		case 'd':
			if equalUpper(w, "DELETE") {
				return kwDelete
			}
		case 'c':
			if equalUpper(w, "COMMIT") {
				return kwCommit
			}
		}
	}
	return kwNone
}

// equalUpper reports whether w spells the upper-case key word k in any
// case. len(w) must be len(k).
func equalUpper(w, k string) bool {
	for i := 0; i < len(k); i++ {
		if w[i]&^0x20 != k[i] {
			return false
		}
	}
	return true
}
